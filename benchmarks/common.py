"""Shared pieces of the benchmark scripts: environment record, latency statistics, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import timm
import torch

RESULTS = Path(__file__).parent / "results"


def environment() -> dict:
    """CPU, threads and versions, recorded with every result."""
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
    }


def summarize(seconds: list[float], batch: int) -> dict:
    """Median, p90, p99, min latency in ms and throughput in images/s."""
    ordered = sorted(seconds)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1e3

    median = statistics.median(ordered)
    return {
        "median_ms": median * 1e3,
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "min_ms": ordered[0] * 1e3,
        "images_per_s": batch / median,
        "samples": len(ordered),
    }


def interleaved_latency(runs: dict[str, Callable[[], object]], rounds: int, per_round: int, warmup: int) -> dict:
    """Seconds per call of every run, measured round-robin so drifts in machine speed hit all alike."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            for _ in range(per_round):
                start = time.perf_counter()
                run()
                samples[name].append(time.perf_counter() - start)
    return samples


def write_json(path: Path, payload: dict) -> None:
    """Write atomically: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, path)
