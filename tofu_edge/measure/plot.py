"""A sweep as a PNG: measured speed-up (against the FLOPs-ideal line) and latency, both against GMACs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tofu_edge.files import atomic_outputs, check_writable

__all__ = ["plot_sweep"]

DPI = 120


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
