"""onnxruntime (CPU) latency of exported fused DeiT-S against the exported unfused model, timed side by side.

Usage: python -m benchmarks.onnx_latency [--rs 8,13,16] [--batches 1,8] [--modes default,mean] [--align 8]

For every batch size, exports the unfused model, the `static-drop` ceiling at each r (the fused token counts with
tokens simply cut off: no matching, no merge, so the fastest this runtime can be at those shapes) and each fusion
mode at each r (static batch, opset 17, the exporter's own parity check), optionally the ceiling and the first
mode again with ``align`` (token counts in multiples of N at the same MACs); then, in a fresh process, runs all
sessions round-robin, one call each per round, with a second session of the unfused file as a control. Reports
the median of the per-round speed-ups against the unfused call of the same round (drifts in machine speed cancel),
each variant's fraction of its FLOPs-ideal speed-up and of the ceiling's speed-up.
Writes benchmarks/results/onnx_latency.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import re
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from unittest import mock

from benchmarks.common import RESULTS, environment, time_onnx_files, timing_parser, write_json
from tofu_edge import FusionConfig
from tofu_edge.export import export_onnx
from tofu_edge.measure import paired_speedup
from tofu_edge.measure.variants import variant_name
from tofu_edge.patch import FusedBlock
from tofu_edge.stats import LatencyStats

STATIC_DROP = "static-drop"
CONTROL = "unfused (second session)"  # the same file again: its speed-up shows how far two equal sessions differ


def main() -> None:
    parser = timing_parser(__doc__)  # re-executes with the steady allocator first
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rs", default="8,13,16")
    parser.add_argument(
        "--modes", default="default,mean", help="default (the library's), a mode name, or tofu@SWITCH; comma list"
    )
    parser.add_argument("--align", type=int, help="Also time the ceiling and the first mode with this align (e.g. 8).")
    parser.add_argument("--rounds", default="40,24", help="Timed rounds per batch size (comma list, in order).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--spinning",
        action="store_true",
        help="Let onnxruntime's idle threads spin (its default). Off by default: sessions interleaved in one "
        "process slow each other down when they spin (benchmarks/README.md, ort_spinning.py).",
    )
    parser.add_argument("--output", default=str(RESULTS / "onnx_latency.json"))
    args = parser.parse_args()

    batches = [int(b) for b in args.batches.split(",")]
    rounds = dict(zip(batches, [int(n) for n in args.rounds.split(",")] * len(batches), strict=False))
    results, exports = [], []
    with tempfile.TemporaryDirectory() as folder:
        for batch in batches:
            configs = variants(args.rs, args.modes, args.align)
            reports = {}
            for name, config in configs.items():
                started = time.perf_counter()
                reports[name] = export_variant(args.model, Path(folder), name, config, batch)
                seconds = time.perf_counter() - started
                exports.append({"variant": name, "batch": batch, "export_and_parity_s": seconds})
                print(f"exported {name} b={batch} in {seconds:.1f} s ({sum(reports[name].ops.values())} nodes)")
            files = {name: str(report.onnx_path) for name, report in reports.items()}
            files[CONTROL] = files["unfused"]
            # A fresh process times the sessions: after the exports, the first session opened in this one ran ~10 %
            # slower than a second session of the same file (benchmarks/README.md, "Allocator").
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                timing = pool.submit(time_onnx_files, files, batch, rounds[batch], args.threads, args.spinning)
                samples = timing.result()
            for name, report in [*reports.items(), (CONTROL, reports["unfused"])]:
                results.append(_row(name, batch, report, samples))
            _print_batch([row for row in results if row["batch"] == batch])

    env = {
        **environment(args.threads),
        "model": args.model,
        "ort_allow_spinning": args.spinning,
        "weights": "random (timm init)",
        "precision": "fp32",
        "opset": 17,
        "rounds": rounds,
    }
    write_json(Path(args.output), {"environment": env, "exports": exports, "results": results})
    print(f"wrote {args.output}")


def export_variant(model: str, folder: Path, name: str, config: FusionConfig, batch: int):
    """Export one variant into ``folder`` (a file name made from ``name``); a ``static-drop`` name exports the
    ceiling (`_static_drop`). Returns the `export_onnx` report."""
    path = folder / f"{''.join(c if c.isalnum() else '_' for c in name)}_b{batch}.onnx"
    with _static_drop() if name.startswith(STATIC_DROP) else contextlib.nullcontext():
        return export_onnx(model, path, config, batch=batch)


def variants(rs: str, modes: str, align: int | None) -> dict[str, FusionConfig | None]:
    """Unfused, then per r the static-drop ceiling and every mode; with ``align``, the ceiling and the first mode
    (the default) aligned too.

    ``clamp=True`` everywhere: DeiT-S's last block cannot remove 16 of its 21 tokens; it is capped there as ToMe does.
    """
    found: dict[str, FusionConfig | None] = {"unfused": FusionConfig()}
    for r in map(int, rs.split(",")):
        configs = {f"{STATIC_DROP} r={r}": FusionConfig(r=r, clamp=True)}
        for mode in modes.split(","):
            config = _config(mode, r)
            configs[variant_name(config) if mode != "default" else f"default ({variant_name(config)})"] = config
        for position, (name, config) in enumerate(configs.items()):
            found[name] = config
            if align and position < 2:
                found[f"{name} align={align}"] = dataclasses.replace(config, align=align)
    return found


def _config(mode: str, r: int) -> FusionConfig:
    if mode == "default":
        return FusionConfig(r=r, clamp=True)
    if mode.startswith("tofu@"):
        return FusionConfig(r=r, mode="tofu", switch=int(mode.removeprefix("tofu@")), clamp=True)
    return FusionConfig(r=r, mode=mode, clamp=True)


def _row(name: str, batch: int, report, samples: dict[str, list[float]]) -> dict:
    plan = report.plan
    ideal = plan.unfused_macs / plan.macs
    speedup = paired_speedup(samples["unfused"], samples[name])
    found = re.search(r"r=(\d+)", name)
    r = found.group(1) if found else None
    ceiling_name = f"{STATIC_DROP} r={r}" + (f" align={name.split('align=')[1]}" if "align=" in name else "")
    ceiling = paired_speedup(samples["unfused"], samples[ceiling_name]) if ceiling_name in samples else None
    return {
        "variant": name,
        "batch": batch,
        "gmacs": plan.macs / 1e9,
        "ideal_speedup": ideal,
        "speedup": speedup,
        "fraction_of_ideal": speedup / ideal,
        "fraction_of_ceiling": speedup / ceiling if ceiling else None,
        "tokens_out": [b.tokens_out for b in plan.blocks],
        "onnx_nodes": sum(report.ops.values()),
        "plan": plan.to_dict(),
        **LatencyStats.from_samples(samples[name], batch).to_dict(),
    }


def _print_batch(rows: list[dict]) -> None:
    print("\n| batch | variant | GMACs | ideal | speed-up | of ideal | of ceiling | nodes |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        ceiling = "-" if row["fraction_of_ceiling"] is None else f"{row['fraction_of_ceiling']:.2f}"
        print(
            f"| {row['batch']} | {row['variant']} | {row['gmacs']:.2f} | {row['ideal_speedup']:.2f}x | "
            f"{row['speedup']:.2f}x | **{row['fraction_of_ideal']:.2f}** | {ceiling} | {row['onnx_nodes']} |",
            flush=True,
        )


@contextlib.contextmanager
def _static_drop():
    """Diagnostic only: blocks keep their first N - r tokens, no matching, so the model has the fused token
    counts and none of the fusion step's ops. Its speed-up is the ceiling this runtime allows."""

    def keep_first(block, x, size, metric):
        return x[:, : x.shape[1] - block.tofu_step.r], size, None

    with mock.patch.object(FusedBlock, "fusion_step", keep_first):
        yield


if __name__ == "__main__":
    main()
