"""`Point`: one candidate's fidelity and speed as tuning knows them (measured, or predicted by the cost model),
ranked against a `Target`; `pareto_front` of a set of points."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tofu_edge.tune.candidates import Candidate
from tofu_edge.tune.latency import Measurement
from tofu_edge.tune.target import Fidelity, Target

__all__ = ["Point", "pareto_front", "rank"]


@dataclass(eq=False)  # points are compared by identity: two can hold equal values
class Point:
    """A candidate and what is known of it.

    Attributes:
        candidate: The schedule.
        fidelity: On the tuning images (``None``: not scored yet).
        fidelity_estimated: The fidelity is the float twin's, standing in until an INT8 export is scored.
        measurement: Timed on the backend (``None``: not timed).
        predicted_ratio: The cost model's latency ratio to the unfused model.
        failed: Why it cannot be timed (its export failed the parity check): it is never chosen.
    """

    candidate: Candidate
    fidelity: Fidelity | None = None
    fidelity_estimated: bool = False
    measurement: Measurement | None = None
    predicted_ratio: float | None = None
    failed: str | None = None

    @property
    def measured(self) -> bool:
        return self.measurement is not None

    @property
    def speedup(self) -> float | None:
        """Measured, else predicted; ``None`` when neither is known."""
        if self.measurement is not None:
            return self.measurement.speedup
        return None if self.predicted_ratio is None else 1.0 / self.predicted_ratio

    def latency_ms(self, unfused_ms: float | None) -> float | None:
        """Measured, else predicted from the unfused model's latency."""
        if self.measurement is not None:
            return self.measurement.latency_ms
        if self.predicted_ratio is None or unfused_ms is None:
            return None
        return unfused_ms * self.predicted_ratio

    def meets(self, target: Target, unfused_ms: float | None, speed_margin: float = 1.0) -> bool:
        """Whether the point meets the target as far as it is known (a predicted speed is relaxed by
        ``speed_margin``, e.g. 0.97, since the prediction only decides what to measure)."""
        speedup, latency = self.speedup, self.latency_ms(unfused_ms)
        if self.fidelity is None or speedup is None or self.failed is not None:
            return False
        if not self.measured:
            speedup, latency = speedup / speed_margin, None if latency is None else latency * speed_margin
        return target.fidelity_ok(self.fidelity) and target.speed_ok(speedup, latency or float("inf"))

    def to_dict(self, unfused_ms: float | None) -> dict:
        fidelity = self.fidelity
        return {
            "name": self.candidate.name,
            "config": None if self.candidate.config is None else self.candidate.config.to_dict(),
            "int8": self.candidate.int8,
            "r_schedule": list(self.candidate.r_schedule),
            "macs_ratio": self.candidate.macs_ratio,
            "cosine": None if fidelity is None else fidelity.cosine,
            "top1_agreement": None if fidelity is None else fidelity.agreement,
            "top1_drop": None if fidelity is None else fidelity.top1_drop,
            "fidelity_estimated": self.fidelity_estimated,
            "speedup": self.speedup,
            "latency_ms": self.latency_ms(unfused_ms),
            "measured": self.measured,
            "measurement": None if self.measurement is None else self.measurement.to_dict(),
            "failed": self.failed,
        }


def rank(points: Sequence[Point], target: Target, labelled: bool) -> list[Point]:
    """Best first by what the target leaves to optimise: fidelity for a speed target (top-1 drop first where the
    images are labelled, then cosine), speed for a fidelity target (then cosine). Points without a fidelity or a
    speed are left out."""
    known = [p for p in points if p.fidelity is not None and p.speedup is not None and p.failed is None]
    if target.wants_speed:

        def key(p: Point) -> tuple:
            drop = p.fidelity.top1_drop if labelled and p.fidelity.top1_drop is not None else 0.0
            return (drop, -p.fidelity.cosine, -p.speedup)

    else:

        def key(p: Point) -> tuple:
            return (-p.speedup, -p.fidelity.cosine)

    return sorted(known, key=key)


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points that no other point beats in both speed-up and cosine, fastest first."""
    known = sorted(
        (p for p in points if p.fidelity is not None and p.speedup is not None and p.failed is None),
        key=lambda p: (-p.speedup, -p.fidelity.cosine),
    )
    front, best = [], -float("inf")
    for point in known:
        if point.fidelity.cosine > best:
            front.append(point)
            best = point.fidelity.cosine
    return front
