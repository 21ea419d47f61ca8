"""Measurements as PNGs: a latency sweep (speed-up against the FLOPs-ideal line, and latency, against GMACs) and an
accuracy-vs-throughput Pareto view of an evaluation."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from tofu_edge.errors import MissingDependencyError
from tofu_edge.files import atomic_outputs, check_writable

if TYPE_CHECKING:
    from tofu_edge.measure.accuracy import EvalReport

__all__ = ["plot_sweep", "plot_pareto", "pareto_front"]

DPI = 120
F = TypeVar("F", bound=Callable)


def _quiet_matplotlib(plot: F) -> F:
    """Run ``plot`` with matplotlib's warnings held back: where its config folder (``~/.config/matplotlib``) cannot
    be written, a read-only or missing home, matplotlib uses a temporary folder and says so in several lines on
    stderr; the plot is the same, so nothing needs saying."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        logger = logging.getLogger("matplotlib")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            return plot(*args, **kwargs)
        finally:
            logger.setLevel(level)

    return wrapper


@_quiet_matplotlib
def plot_sweep(results: Sequence[dict], path: str | Path, *, title: str = "") -> Path:
    """Write a two-panel PNG of a sweep, atomically.

    Left: speed-up against the baseline vs GMACs, with the FLOPs-ideal curve ``unfused / gmacs``. Right: median
    latency vs GMACs, with p90 as the upper whisker. Each point is labelled with its variant name.

    Args:
        results: Result rows as written to the JSON lines (``variant``, ``gmacs``, ``unfused_gmacs``, ``speedup``,
            ``stats`` with ``median_ms`` and ``p90_ms``); rows without ``gmacs`` are left out.
        path: The ``.png`` to write.
        title: Figure title (model, backend, batch).

    Returns:
        ``path``.

    Raises:
        OutputError: ``path`` cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: never open a window
    from matplotlib.figure import Figure

    path = Path(path)
    check_writable(path)
    rows = sorted((row for row in results if row.get("gmacs") is not None), key=lambda row: row["gmacs"])
    gmacs = [row["gmacs"] for row in rows]
    figure = Figure(figsize=(11, 4.5), dpi=DPI, layout="constrained")
    speed, latency = figure.subplots(1, 2)

    speed.plot(gmacs, [row["speedup"] for row in rows], "o-", color="tab:blue", label="measured")
    ideal = [row["unfused_gmacs"] / row["gmacs"] for row in rows if row.get("unfused_gmacs")]
    if len(ideal) == len(rows):
        speed.plot(gmacs, ideal, "--", color="tab:gray", label="FLOPs-ideal")
    speed.set(xlabel="GMACs per image", ylabel="speed-up vs baseline (x)", title="speed-up (median of paired ratios)")
    speed.legend(loc="best")

    medians = [row["stats"]["median_ms"] for row in rows]
    upper = [row["stats"]["p90_ms"] - row["stats"]["median_ms"] for row in rows]
    latency.errorbar(gmacs, medians, yerr=[[0] * len(rows), upper], fmt="o-", color="tab:orange", capsize=3)
    latency.set(xlabel="GMACs per image", ylabel="latency per batch (ms)", title="median latency (whisker: p90)")

    for axes, values in ((speed, [row["speedup"] for row in rows]), (latency, medians)):
        axes.grid(True, alpha=0.3)
        axes.margins(x=0.15, y=0.12)  # room for the labels
        for row, x, y in zip(rows, gmacs, values, strict=True):
            axes.annotate(row["variant"], (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
    if title:
        figure.suptitle(title)
    with atomic_outputs(path) as (temp,):
        figure.savefig(temp, format="png")
    return path


@_quiet_matplotlib
def plot_pareto(report: EvalReport, path: str | Path) -> Path:
    """Write a PNG of top-1 accuracy and top-1 agreement against images/s, with the Pareto front of each.

    Raises:
        MissingDependencyError: matplotlib is not installed.
        OutputError: ``path`` cannot be written.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError(
            "the accuracy-vs-throughput plot needs matplotlib: pip install matplotlib"
        ) from None
    path = Path(path)
    check_writable(path)
    figure = Figure(figsize=(11, 4.6), dpi=120)
    FigureCanvasAgg(figure)
    speed = [v.metrics.images_per_s for v in report.variants]
    panels = [
        (key, title, scale)
        for key, title, scale in (
            ("top1", "top-1 accuracy (%)", 100),
            ("top1_agreement", "top-1 agreement with unfused (%)", 100),
            ("mean_cosine", "output cosine to unfused", 1),
        )
        if getattr(report.variants[0].metrics, key) is not None
    ][:2]  # unlabelled or headless: the cosine takes the place of what cannot be measured
    for axes, (key, title, scale) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        values = [scale * getattr(v.metrics, key) for v in report.variants]
        front = pareto_front(speed, values)
        axes.plot([speed[i] for i in front], [values[i] for i in front], "-", color="tab:orange", label="Pareto front")
        for i, variant in enumerate(report.variants):
            marker = "s" if variant.plan is None and variant.backend == "pytorch" else "o"
            axes.plot(speed[i], values[i], marker, color="tab:blue" if i in front else "tab:gray")
            axes.annotate(variant.name, (speed[i], values[i]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        axes.set_xlabel("images/s (rough, CPU eager unless noted)")
        axes.set_ylabel(title)
        axes.set_title(title, fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left", fontsize=8)
    images = report.variants[0].metrics.images
    figure.suptitle(f"{report.model}: {images} images of {report.data_dir.name}, batch {report.batch}", fontsize=11)
    from tofu_edge.measure.accuracy import THROUGHPUT_NOTE

    figure.text(0.5, 0.005, THROUGHPUT_NOTE, ha="center", fontsize=7, color="dimgray")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    with atomic_outputs(path) as (temp,):
        figure.savefig(temp, format="png")
    return path


def pareto_front(speed: Sequence[float], value: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats in both speed and value, fastest first."""
    order = sorted(range(len(speed)), key=lambda i: (-speed[i], -value[i]))
    front, best = [], -float("inf")
    for i in order:
        if value[i] > best:
            front.append(i)
            best = value[i]
    return front
