"""`LatencyStats`: the one summary of timed calls that every tofu-edge measurement reports (bench, engines, the
benchmark scripts), with one percentile definition. Needs numpy only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["LatencyStats"]


@dataclass(frozen=True)
class LatencyStats:
    """Latency over the timed calls of one variant (ms) and its throughput at the median.

    Percentiles interpolate linearly between samples (``numpy.percentile``'s default), the same everywhere.

    Args:
        samples: Timed calls.
        median_ms: Median latency per call.
        p90_ms: 90th percentile.
        p99_ms: 99th percentile.
        min_ms: Fastest call.
        mean_ms: Mean latency.
        images_per_s: ``batch`` images per call at the median latency.
    """

    samples: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    mean_ms: float
    images_per_s: float

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], batch: int = 1) -> LatencyStats:
        """Summary of per-call times in ms for calls of ``batch`` images.

        Raises:
            ValueError: no samples.
        """
        values = np.asarray(samples_ms, dtype=np.float64)
        if values.size == 0:
            raise ValueError("no latency samples")
        median, p90, p99 = (float(v) for v in np.percentile(values, [50, 90, 99]))
        return cls(int(values.size), median, p90, p99, float(values.min()), float(values.mean()), batch * 1e3 / median)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)
