"""What every benchmark script shares: where results go and how they are written, how a timing script starts, and
how ONNX files are timed. Timing, statistics and the environment record come from `tofu_edge.measure` and
`tofu_edge.stats`, the same code `tofu-edge bench` runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tofu_edge.export import ort_session
from tofu_edge.files import atomic_outputs
from tofu_edge.measure import measure_interleaved, ort_runner
from tofu_edge.measure.allocator import run_with_steady_allocator
from tofu_edge.measure.environment import describe_environment

__all__ = ["RESULTS", "environment", "write_json", "timing_parser", "time_onnx_files"]

RESULTS = Path(__file__).parent / "results"


def environment(threads: int | None = None, device: str = "cpu") -> dict:
    """CPU, threads, GPU, versions and date, recorded with every result (`describe_environment`)."""
    return describe_environment(threads=threads, device=device)


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON, atomically (nothing half-written on failure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_outputs(path) as (temp,):
        temp.write_text(json.dumps(payload, indent=2) + "\n")


def timing_parser(doc: str) -> argparse.ArgumentParser:
    """The argument parser of a timing script (described by its docstring's first line), after re-executing the
    process with the steady allocator settings (`run_with_steady_allocator`): call it first thing in ``main``."""
    run_with_steady_allocator()
    return argparse.ArgumentParser(description=doc.splitlines()[0])


def time_onnx_files(
    files: dict[str, str | Path], batch: int, rounds: int, threads: int, spinning: bool = False
) -> dict[str, list[float]]:
    """Time ONNX files round-robin (`measure_interleaved`), one onnxruntime session each, on one random batch of
    224 px images; returns each file's latencies in ms, one per round."""
    images = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    runners = [
        ort_runner(name, ort_session(path, threads=threads, spinning=spinning), images) for name, path in files.items()
    ]
    return measure_interleaved(runners, warmup=3, iterations=rounds)
