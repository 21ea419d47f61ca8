"""`Target`: what `tofu-edge tune` is asked for, one of a speed-up, a latency, an output cosine or a top-1 drop."""

from __future__ import annotations

from dataclasses import dataclass

from tofu_edge.choices import TargetKind, parse_choice
from tofu_edge.errors import ConfigError

__all__ = ["TargetKind", "Target", "Fidelity"]


@dataclass(frozen=True)
class Fidelity:
    """How close a fused model's outputs are to the unfused model's, on the tuning images.

    Attributes:
        cosine: Mean per-image cosine of the outputs.
        agreement: Fraction of images whose top-1 class agrees (``None``: the model has no classifier).
        top1_drop: Points of top-1 lost: against the labels where the folder is labelled, else ``100 * (1 -
            agreement)``, the most it can be (``None``: no classifier).
    """

    cosine: float
    agreement: float | None = None
    top1_drop: float | None = None


@dataclass(frozen=True)
class Target:
    """One tuning goal.

    Args:
        kind: What is asked for.
        value: The speed-up (> 1 is a gain), the latency in ms, the lowest mean cosine in (0, 1], or the most
            top-1 points to lose (>= 0).

    Raises:
        ConfigError: a value outside its range.
    """

    kind: TargetKind
    value: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", parse_choice(TargetKind, self.kind, "target"))
        ranges = {
            TargetKind.SPEEDUP: (self.value > 0, "a speed-up > 0 (e.g. 1.5)"),
            TargetKind.LATENCY_MS: (self.value > 0, "a latency > 0 ms"),
            TargetKind.MIN_COSINE: (0 < self.value <= 1, "a cosine in (0, 1] (e.g. 0.995)"),
            TargetKind.MAX_TOP1_DROP: (0 <= self.value <= 100, "top-1 points in [0, 100] (e.g. 0.5)"),
        }
        valid, expected = ranges[self.kind]
        if not valid:
            raise ConfigError(f"--{self.kind.value} takes {expected}, got {self.value:g}")

    @classmethod
    def from_options(cls, **values: float | None) -> Target:
        """The one target given among ``speedup``, ``latency_ms``, ``min_cosine`` and ``max_top1_drop``.

        Raises:
            ConfigError: none or several given, or a value outside its range.
        """
        given = {key: value for key, value in values.items() if value is not None}
        if len(given) != 1:
            options = ", ".join(f"--{kind.value}" for kind in TargetKind)
            raise ConfigError(f"give exactly one target: {options} (got {len(given)})")
        [(key, value)] = given.items()
        return cls(TargetKind(key.replace("_", "-")), float(value))

    @property
    def wants_speed(self) -> bool:
        """The target is a speed (rank what meets it by fidelity), not a fidelity (rank by speed)."""
        return self.kind in (TargetKind.SPEEDUP, TargetKind.LATENCY_MS)

    def speed_ok(self, speedup: float, latency_ms: float) -> bool:
        """Whether a speed meets a speed target (always true for a fidelity target)."""
        if self.kind is TargetKind.SPEEDUP:
            return speedup >= self.value
        if self.kind is TargetKind.LATENCY_MS:
            return latency_ms <= self.value
        return True

    def fidelity_ok(self, fidelity: Fidelity) -> bool:
        """Whether a fidelity meets a fidelity target (always true for a speed target)."""
        if self.kind is TargetKind.MIN_COSINE:
            return fidelity.cosine >= self.value
        if self.kind is TargetKind.MAX_TOP1_DROP:
            return fidelity.top1_drop is not None and fidelity.top1_drop <= self.value + 1e-9
        return True

    def shortfall(self, speedup: float, latency_ms: float, fidelity: Fidelity) -> float:
        """How far a point misses the target, relative to it (0 when met): ranks the closest points."""
        if self.kind is TargetKind.SPEEDUP:
            return max(0.0, self.value - speedup) / self.value
        if self.kind is TargetKind.LATENCY_MS:
            return max(0.0, latency_ms - self.value) / self.value
        if self.kind is TargetKind.MIN_COSINE:
            return max(0.0, self.value - fidelity.cosine)
        drop = 100.0 if fidelity.top1_drop is None else fidelity.top1_drop
        return max(0.0, drop - self.value) / 100.0

    def describe(self) -> str:
        """``speed-up >= 1.5x``, ``latency <= 20 ms``, ``cosine >= 0.995``, ``top-1 drop <= 0.5 points``."""
        return {
            TargetKind.SPEEDUP: f"speed-up >= {self.value:g}x",
            TargetKind.LATENCY_MS: f"latency <= {self.value:g} ms",
            TargetKind.MIN_COSINE: f"cosine >= {self.value:g}",
            TargetKind.MAX_TOP1_DROP: f"top-1 drop <= {self.value:g} points",
        }[self.kind]
