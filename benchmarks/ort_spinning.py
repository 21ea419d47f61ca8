"""onnxruntime thread spinning, timed the way a one-model deployment runs: one process per session.

Usage: python -m benchmarks.ort_spinning [--r 13] [--rounds 30] [--gaps-ms 0,20]

`onnx_latency.py` interleaves every session in one process, where spinning threads of idle sessions would steal the
CPU from the running one, so it turns spinning off. A deployment runs one model per process, usually with time
between requests. This script exports DeiT-S unfused, the static-drop ceiling, the default and `mean` at one r
(batch 1), starts one spawned process per file (and a second one for the unfused file, the control), and calls them
in turn, one call each per round, each round starting one process later, with ``gap`` ms of idle time before every
call; once with spinning off and once on. Writes benchmarks/results/ort_spinning.json.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, environment, timing_parser, write_json
from benchmarks.onnx_latency import STATIC_DROP, export_variant
from tofu_edge import FusionConfig
from tofu_edge.export import ort_session
from tofu_edge.measure import Runner, measure_interleaved, paired_speedup
from tofu_edge.stats import LatencyStats

WARMUP_ROUNDS = 3
CONTROL = "unfused (second process)"


def main() -> None:
    parser = timing_parser(__doc__)  # re-executes with the steady allocator first
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--r", type=int, default=13)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--gaps-ms", default="0,20", help="Idle time before every call, ms (comma list).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS / "ort_spinning.json"))
    args = parser.parse_args()

    configs = {
        "unfused": FusionConfig(),
        f"{STATIC_DROP} r={args.r}": FusionConfig(r=args.r, clamp=True),
        f"default (mlerp r={args.r})": FusionConfig(r=args.r, clamp=True),
        f"mean r={args.r}": FusionConfig(r=args.r, mode="mean", clamp=True),
    }
    results = []
    with tempfile.TemporaryDirectory() as folder:
        files, plans = {}, {}
        for name, config in configs.items():
            report = export_variant(args.model, Path(folder), name, config, 1)
            files[name], plans[name] = str(report.onnx_path), report.plan
        files[CONTROL], plans[CONTROL] = files["unfused"], plans["unfused"]
        for gap_ms in (float(g) for g in args.gaps_ms.split(",")):
            for spinning in (False, True):
                samples = time_processes(files, spinning, args.threads, args.rounds, gap_ms / 1e3)
                for name, plan in plans.items():
                    speedup = paired_speedup(samples["unfused"], samples[name])
                    results.append(
                        {
                            "variant": name,
                            "spinning": spinning,
                            "gap_ms": gap_ms,
                            "ideal_speedup": plan.unfused_macs / plan.macs,
                            "speedup": speedup,
                            "fraction_of_ideal": speedup * plan.macs / plan.unfused_macs,
                            **LatencyStats.from_samples(samples[name], 1).to_dict(),
                        }
                    )
                    row = results[-1]
                    print(
                        f"gap {gap_ms:4.0f} ms  spinning {'on ' if spinning else 'off'}  {name:26s} "
                        f"{row['median_ms']:7.2f} ms  x{speedup:.3f}  ({row['fraction_of_ideal']:.2f} of ideal)",
                        flush=True,
                    )
    env = {**environment(args.threads), "model": args.model, "batch": 1, "precision": "fp32", "rounds": args.rounds}
    write_json(Path(args.output), {"environment": env, "results": results})
    print(f"wrote {args.output}")


def time_processes(
    files: dict[str, str], spinning: bool, threads: int, rounds: int, gap_s: float
) -> dict[str, list[float]]:
    """One spawned process per file, timed by `measure_interleaved` (one call each per round, rotating), each call
    after ``gap_s`` of idle time; returns each file's call latencies in ms as its process measured them."""
    context = multiprocessing.get_context("spawn")
    workers = []
    for name, path in files.items():
        ours, theirs = context.Pipe()
        process = context.Process(target=serve, args=(path, spinning, threads, theirs), daemon=True)
        process.start()
        ours.recv()  # the session is open
        workers.append((name, process, ours))

    def call(connection: Connection) -> float:
        time.sleep(gap_s)
        connection.send("run")
        return connection.recv()  # the latency the worker measured, in ms: what measure_interleaved records

    try:
        runners = [Runner(name, lambda connection=connection: call(connection)) for name, _, connection in workers]
        return measure_interleaved(runners, warmup=WARMUP_ROUNDS, iterations=rounds)
    finally:
        for _, process, connection in workers:
            connection.send("stop")
            process.join(timeout=30)


def serve(path: str, spinning: bool, threads: int, connection: Connection) -> None:
    """A worker process: one onnxruntime session, one timed call per ``run`` message."""
    session = ort_session(path, threads=threads, spinning=spinning)
    feeds = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal((1, 3, 224, 224), np.float32)}
    connection.send("ready")
    while connection.recv() == "run":
        started = time.perf_counter()
        session.run(None, feeds)
        connection.send((time.perf_counter() - started) * 1e3)


if __name__ == "__main__":
    main()
