"""onnxruntime (CPU) latency of exported fused DeiT-S against the exported unfused model, in one process.

Usage: python -m benchmarks.onnx_latency [--rounds 40] [--rs 8,13,16] [--batches 1,8]

For every batch size, exports the unfused model and the fused ones (static batch, opset 17, with the
exporter's own parity check, timed), then runs all sessions round-robin, one call each per round. Reports
the median of the per-round speed-ups (each fused call against the unfused call of the same round, so
drifts in machine speed cancel), the speed-up of the fastest calls, and each one's fraction of the
FLOPs-ideal speed-up. Writes benchmarks/results/onnx_latency.json.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from benchmarks.common import RESULTS, environment, write_json
from tofu_edge import FusionConfig
from tofu_edge.export import export_onnx, ort_session
from tofu_edge.measure import measure_interleaved, ort_runner, paired_speedup
from tofu_edge.patch import FusedBlock
from tofu_edge.stats import LatencyStats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rs", default="8,13,16")
    parser.add_argument("--mode", default="tofu")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--spinning",
        action="store_true",
        help="Let onnxruntime's idle threads spin (its default). Off by default: on 2-vCPU machines spinning "
        "costs the unfused model 40 %% (benchmarks/README.md).",
    )
    parser.add_argument(
        "--static-drop",
        type=int,
        metavar="R",
        help="Also time the runtime's ceiling at this r: the fused token counts, cut off with no matching.",
    )
    parser.add_argument("--output", default=str(RESULTS / "onnx_latency.json"))
    args = parser.parse_args()

    results, exports = [], []
    with tempfile.TemporaryDirectory() as folder:
        for batch in map(int, args.batches.split(",")):
            configs = {"unfused": FusionConfig()}
            for r in map(int, args.rs.split(",")):
                # clamp: DeiT-S's last block cannot remove 16 of its 21 tokens; cap it there as ToMe does
                configs[f"{args.mode} r={r}"] = FusionConfig(r=r, mode=args.mode, clamp=True)
            if args.static_drop is not None:
                configs[f"static-drop r={args.static_drop}"] = FusionConfig(r=args.static_drop, clamp=True)
            reports = {}
            for name, config in configs.items():
                started = time.perf_counter()
                path = Path(folder) / f"{name.replace(' ', '_').replace('=', '')}_b{batch}.onnx"
                with _static_drop() if name.startswith("static-drop") else contextlib.nullcontext():
                    reports[name] = export_onnx(args.model, path, config, batch=batch)
                seconds = time.perf_counter() - started
                exports.append(
                    {
                        "variant": name,
                        "batch": batch,
                        "export_and_parity_s": seconds,
                        "parity_passed": reports[name].parity.passed,
                    }
                )
                print(f"exported {name} b={batch} in {seconds:.1f} s", flush=True)
            samples = _paired_latency(reports, batch, args.rounds, args.threads, args.spinning)
            base = np.array(samples["unfused"])
            for name, report in reports.items():
                times = np.array(samples[name])
                ideal = report.plan.unfused_macs / report.plan.macs
                speedup = paired_speedup(samples["unfused"], samples[name])
                results.append(
                    {
                        "variant": name,
                        "batch": batch,
                        "gmacs": report.plan.macs / 1e9,
                        "ideal_speedup": ideal,
                        "speedup": speedup,
                        "fraction_of_ideal": speedup / ideal,
                        "speedup_of_fastest": float(base.min() / times.min()),
                        "onnx_nodes": sum(report.ops.values()),
                        "plan": report.plan.to_dict(),
                        **LatencyStats.from_samples(samples[name], batch).to_dict(),
                    }
                )
                print(
                    f"b={batch} {name:10s} x{speedup:.3f} (ideal x{ideal:.2f}, {speedup / ideal:.2f} of it)", flush=True
                )

    env = {
        **environment(args.threads),
        "model": args.model,
        "ort_threads": args.threads,
        "ort_allow_spinning": args.spinning,
        "weights": "random (timm init)",
        "precision": "fp32",
        "opset": 17,
    }
    write_json(Path(args.output), {"environment": env, "exports": exports, "results": results})
    print("\n| batch | variant | GMACs | ideal | speed-up | of ideal | fastest-call speed-up |")
    print("|---|---|---|---|---|---|---|")
    for row in results:
        print(
            f"| {row['batch']} | {row['variant']} | {row['gmacs']:.2f} | {row['ideal_speedup']:.2f}x | "
            f"{row['speedup']:.2f}x | {row['fraction_of_ideal']:.2f} | {row['speedup_of_fastest']:.2f}x |"
        )


@contextlib.contextmanager
def _static_drop():
    """Diagnostic only: blocks keep their first N - r tokens, no matching, so the model has the fused token
    counts and none of the fusion step's ops. Its speed-up is the ceiling this runtime allows."""

    def keep_first(block, x, size, metric):
        r = block.tofu_step.r
        return x[:, : x.shape[1] - r], size, None

    with mock.patch.object(FusedBlock, "fusion_step", keep_first):
        yield


def _paired_latency(reports: dict, batch: int, rounds: int, threads: int, spinning: bool) -> dict[str, list[float]]:
    """Milliseconds per call of every session, round-robin with one call each per round."""
    images = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    runners = [
        ort_runner(name, ort_session(r.onnx_path, threads=threads, spinning=spinning), images)
        for name, r in reports.items()
    ]
    return measure_interleaved(runners, warmup=3, iterations=rounds)


if __name__ == "__main__":
    main()
