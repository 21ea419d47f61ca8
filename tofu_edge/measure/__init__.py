"""Measurements: paired latency of fused and unfused variants, accuracy against the unfused model, the environment
they ran in, and plots. Names are imported on first use: timing files (`bench_files`) needs no torch."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "bench_model",
    "bench_files",
    "BenchResult",
    "Timing",
    "Variant",
    "parse_sweep",
    "variant_name",
    "Runner",
    "LatencyStats",
    "measure_interleaved",
    "paired_speedup",
    "torch_runner",
    "ort_runner",
    "engine_runner",
    "evaluate",
    "EvalReport",
    "describe_environment",
    "jetson_info",
    "TegrastatsSampler",
    "parse_tegrastats",
    "plot_sweep",
    "plot_pareto",
]

_HOMES = {
    "bench_model": "bench",
    "bench_files": "bench",
    "BenchResult": "bench",
    "Timing": "bench",
    "Variant": "variants",
    "parse_sweep": "variants",
    "variant_name": "variants",
    "Runner": "latency",
    "measure_interleaved": "latency",
    "paired_speedup": "latency",
    "torch_runner": "latency",
    "ort_runner": "latency",
    "engine_runner": "latency",
    "evaluate": "accuracy",
    "EvalReport": "accuracy",
    "describe_environment": "environment",
    "jetson_info": "environment",
    "TegrastatsSampler": "environment",
    "parse_tegrastats": "environment",
    "plot_sweep": "plot",
    "plot_pareto": "plot",
}


def __getattr__(name: str) -> Any:
    if name == "LatencyStats":
        from tofu_edge.stats import LatencyStats

        return LatencyStats
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
