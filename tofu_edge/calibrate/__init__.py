"""Calibration on the user's images: the ToFu switch block (`calibrate_switch`, methods ``search`` and ``probe``)
or every block's step operation (`calibrate_ops`, method ``per-block``), both scored end to end by the cosine of
the fused model's outputs to the unfused model's. `OpsRunner` evaluates many per-block operation lists, sharing
their common leading blocks."""

from __future__ import annotations

from tofu_edge.calibrate.per_block import DEFAULT_MIN_GAIN, DEFAULT_PASSES, OpsCalibration, OpsChange, calibrate_ops
from tofu_edge.calibrate.runner import OpsRunner, output_cosines, switch_ops, uniform_ops
from tofu_edge.calibrate.switch import BlockProbe, Calibration, calibrate_switch

__all__ = [
    "BlockProbe",
    "Calibration",
    "calibrate_switch",
    "OpsCalibration",
    "OpsChange",
    "calibrate_ops",
    "DEFAULT_PASSES",
    "DEFAULT_MIN_GAIN",
    "OpsRunner",
    "output_cosines",
    "switch_ops",
    "uniform_ops",
]
