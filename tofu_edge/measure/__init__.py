"""Measurements: paired latency of fused and unfused variants, the environment they ran in, sweep plots."""

from __future__ import annotations

from tofu_edge.measure.bench import BACKENDS, BenchResult, Timing, Variant, bench_files, bench_model, parse_sweep
from tofu_edge.measure.environment import TegrastatsSampler, describe_environment, jetson_info, parse_tegrastats
from tofu_edge.measure.latency import (
    LatencyStats,
    Runner,
    engine_runner,
    measure_interleaved,
    ort_runner,
    ort_session,
    paired_speedup,
    torch_runner,
)
from tofu_edge.measure.plot import plot_sweep

__all__ = [
    "bench_model",
    "bench_files",
    "parse_sweep",
    "BenchResult",
    "Timing",
    "Variant",
    "BACKENDS",
    "Runner",
    "LatencyStats",
    "measure_interleaved",
    "paired_speedup",
    "torch_runner",
    "ort_session",
    "ort_runner",
    "engine_runner",
    "describe_environment",
    "jetson_info",
    "TegrastatsSampler",
    "parse_tegrastats",
    "plot_sweep",
]
