"""`TuneReport`: what `tofu-edge tune` found (the choice, its re-measurement, the Pareto front, every point), as
JSON and as a PNG of speed-up against output cosine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tofu_edge.config import FusionConfig
from tofu_edge.errors import MissingDependencyError
from tofu_edge.files import atomic_outputs, check_writable
from tofu_edge.tune.latency import Measurement
from tofu_edge.tune.points import Point, pareto_front
from tofu_edge.tune.target import Target

__all__ = ["TuneReport"]


@dataclass(frozen=True)
class TuneReport:
    """The outcome of a tuning run.

    Attributes:
        model: timm model name; ``img_size`` and ``checkpoint`` as given.
        target: What was asked for.
        settings: Backend, device, batch, threads, compile, int8, budget (JSON types).
        images: Tuning images, and whether they are labelled.
        points: Every candidate scored or timed.
        chosen: The pick (``None``: nothing could be timed).
        met: Whether the pick meets the target (else it is the closest timed point).
        remeasured: The pick timed again in a fresh run.
        unfused_ms: The unfused model's median latency per call.
        notes: What the user should know (fusion does not pay here, the budget ran out, ...).
        seconds: Wall-clock time of the run; ``phases``: when each phase ended.
        environment: `tofu_edge.measure.describe_environment`.
    """

    model: str
    img_size: int | None
    checkpoint: str | None
    target: Target
    settings: dict
    images: int
    labelled: bool
    points: tuple[Point, ...]
    chosen: Point | None
    met: bool
    remeasured: Measurement | None
    unfused_ms: float | None
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    phases: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)

    @property
    def front(self) -> list[Point]:
        """The Pareto front (speed-up against cosine; measured or predicted), fastest first."""
        return pareto_front(self.points)

    @property
    def config(self) -> FusionConfig | None:
        """The chosen fusion (``None`` with ``r = 0`` chosen, or nothing timed)."""
        return None if self.chosen is None else self.chosen.candidate.config

    def to_dict(self) -> dict:
        chosen = None if self.chosen is None else self.chosen.to_dict(self.unfused_ms)
        return {
            "model": self.model,
            "img_size": self.img_size,
            "checkpoint": self.checkpoint,
            "target": {"kind": self.target.kind.value, "value": self.target.value},
            "settings": self.settings,
            "images": self.images,
            "labelled": self.labelled,
            "met": self.met,
            "chosen": chosen,
            "remeasured": None if self.remeasured is None else self.remeasured.to_dict(),
            "unfused_ms": self.unfused_ms,
            "notes": list(self.notes),
            "seconds": self.seconds,
            "phases": self.phases,
            "front": [p.candidate.name for p in self.front],
            "points": [p.to_dict(self.unfused_ms) for p in self.points],
            "environment": self.environment,
        }

    def config_payload(self) -> dict:
        """What ``--output`` writes: ``export --config FILE`` reads its ``config``."""
        config = self.config.to_dict() if self.config is not None else FusionConfig().to_dict()
        return {
            "model": self.model,
            "img_size": self.img_size,
            "checkpoint": self.checkpoint,
            "config": config,
            "int8": bool(self.chosen and self.chosen.candidate.int8),
            "tune": {
                "target": self.target.describe(),
                "met": self.met,
                "name": self.chosen and self.chosen.candidate.name,
            },
        }

    def plot(self, path: Path) -> Path:
        """A PNG of every point (speed-up against cosine; filled: timed, hollow: predicted), the front, the target
        and the pick, written atomically.

        Raises:
            MissingDependencyError: matplotlib is not installed.
            OutputError: ``path`` cannot be written.
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            raise MissingDependencyError("the tuning plot needs matplotlib: pip install matplotlib") from None
        check_writable(path)
        figure = Figure(figsize=(8, 5), dpi=120, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots()
        known = [p for p in self.points if p.fidelity is not None and p.speedup is not None]
        for measured, style in ((False, {"facecolors": "none"}), (True, {})):
            group = [p for p in known if p.measured == measured]
            axes.scatter(
                [p.speedup for p in group],
                [p.fidelity.cosine for p in group],
                s=22,
                color="tab:blue",
                edgecolors="tab:blue",
                label="timed" if measured else "predicted (cost model)",
                **style,
            )
        front = self.front
        axes.plot(
            [p.speedup for p in front],
            [p.fidelity.cosine for p in front],
            "-",
            color="tab:orange",
            label="Pareto front",
        )
        if self.chosen is not None and self.chosen.fidelity is not None:
            speedup = self.remeasured.speedup if self.remeasured is not None else self.chosen.speedup
            axes.plot(
                speedup,
                self.chosen.fidelity.cosine,
                "*",
                color="tab:red",
                markersize=16,
                label=f"chosen: {self.chosen.candidate.name}",
            )
        if self.target.kind.value == "speedup":
            axes.axvline(self.target.value, color="gray", linestyle="--", label=self.target.describe())
        elif self.target.kind.value == "min-cosine":
            axes.axhline(self.target.value, color="gray", linestyle="--", label=self.target.describe())
        axes.set(
            xlabel="speed-up against the unfused model (x)",
            ylabel="output cosine to the unfused model",
            title=f"{self.model}: {self.settings['backend']}, batch {self.settings['batch']}",
        )
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left", fontsize=8)
        with atomic_outputs(path) as (temp,):
            figure.savefig(temp, format="png")
        return path
