"""`tofu-edge tune`: the schedule that meets a speed or fidelity target best, measured on the user's backend.

Candidates (`candidates`) are scored for fidelity on the user's images (`fidelity`), a cost model fitted to the
first timings (`cost`) ranks them for speed, and only those near the target are timed (`latency`); `search` runs
the budgeted phases and `report` holds the outcome."""

from __future__ import annotations

from tofu_edge.tune.report import TuneReport
from tofu_edge.tune.run import DEFAULT_IMAGES, tune
from tofu_edge.tune.settings import TuneSettings
from tofu_edge.tune.target import Fidelity, Target, TargetKind

__all__ = ["tune", "TuneReport", "TuneSettings", "Target", "TargetKind", "Fidelity", "DEFAULT_IMAGES"]
