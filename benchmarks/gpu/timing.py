"""Timing on a CUDA device (events, CUDA graphs) with the same calls falling back to host clocks on the CPU.

Three ways to time a callable ``fn`` that enqueues device work:

- `latency_samples`: synchronise, then time one call to its end: what one request waits (launches included);
- `throughput_samples`: calls back to back, timed in blocks: the cost per call when launches overlap work;
- `graph_samples`: replays of a CUDA graph holding the calls: device time with the launch gaps removed.

All return seconds per call; `stats` turns samples into medians and spreads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from tofu_edge.stats import LatencyStats

__all__ = ["Clock", "stats", "capture_graph", "latency_samples", "throughput_samples", "graph_samples"]


class Clock:
    """Device-side elapsed time on CUDA (events on the current stream), host time elsewhere.

    Args:
        device: Where the timed work runs.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def mark(self):
        """A point in time: a recorded event on CUDA, a host clock reading elsewhere."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start, end) -> float:
        """Seconds from ``start`` to ``end`` (both from `mark`; on CUDA, ``end`` must have completed)."""
        if self.cuda:
            return start.elapsed_time(end) / 1e3
        return end - start


def stats(samples: list[float]) -> dict:
    """Median, 10th and 90th percentiles and minimum of per-call seconds, in microseconds: `LatencyStats`'s figures
    (one percentile definition for every tofu-edge measurement) plus the 10th percentile, defined the same way."""
    if not samples:
        return {"median_us": None, "p10_us": None, "p90_us": None, "min_us": None, "samples": 0}
    summary = LatencyStats.from_samples([s * 1e3 for s in samples])
    return {
        "median_us": summary.median_ms * 1e3,
        "p10_us": float(np.percentile(samples, 10)) * 1e6,
        "p90_us": summary.p90_ms * 1e3,
        "min_us": summary.min_ms * 1e3,
        "samples": summary.samples,
    }


def latency_samples(clock: Clock, fn: Callable[[], object], count: int) -> list[float]:
    """``count`` calls, each started on an idle device and timed to its end."""
    samples = []
    for _ in range(count):
        clock.sync()
        start = clock.mark()
        fn()
        end = clock.mark()
        clock.sync()
        samples.append(clock.seconds(start, end))
    return samples


def throughput_samples(clock: Clock, fns: list[Callable[[], object]], blocks: int) -> list[float]:
    """``blocks`` blocks of back-to-back calls of every ``fns`` (one per rotated input set); seconds per call."""
    marks = []
    clock.sync()
    for _ in range(blocks):
        start = clock.mark()
        for fn in fns:
            fn()
        marks.append((start, clock.mark()))
    clock.sync()
    return [clock.seconds(start, end) / len(fns) for start, end in marks]


def capture_graph(fn: Callable[[], object], warmup: int = 2) -> tuple[torch.cuda.CUDAGraph, object]:
    """A CUDA graph of ``fn`` and what ``fn`` returned while being captured (its static outputs).

    ``fn`` runs ``warmup`` times on a side stream first, as torch's documentation asks (lazy initialisation,
    module loading and workspace allocation stay out of the capture), then once under capture.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()
    torch.cuda.synchronize()
    return graph, outputs


def graph_samples(clock: Clock, graph: torch.cuda.CUDAGraph, calls_per_replay: int, replays: int) -> list[float]:
    """``replays`` timed replays of a graph that holds ``calls_per_replay`` calls; seconds per call."""
    marks = []
    clock.sync()
    for _ in range(replays):
        start = clock.mark()
        graph.replay()
        marks.append((start, clock.mark()))
    clock.sync()
    return [clock.seconds(start, end) / calls_per_replay for start, end in marks]


def count_for(seconds_per_call: float, budget_s: float, low: int, high: int) -> int:
    """How many calls fit ``budget_s``, clamped to ``[low, high]``."""
    if not math.isfinite(seconds_per_call) or seconds_per_call <= 0:
        return high
    return max(low, min(high, int(budget_s / seconds_per_call)))
