"""The selection study's statistics and its default rule (`benchmarks.real_weights_selection`), on made-up numbers."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.real_weights_selection import CANDIDATES, DEFAULT, apply_rule, config_for, paired, swapped_sets
from tofu_edge.config import Selection
from tofu_edge.ops.match import match_tokens


def test_paired_gives_view_and_photo_clustered_errors():
    cosines = torch.tensor([0.9, 0.8, 0.7, 0.9], dtype=torch.float64)
    baseline = torch.tensor([0.8, 0.8, 0.8, 0.8], dtype=torch.float64)
    stat = paired(cosines, baseline, torch.tensor([0, 0, 1, 1]))
    diffs = torch.tensor([0.1, 0.0, -0.1, 0.1], dtype=torch.float64)
    assert stat["diff"] == pytest.approx(float(diffs.mean()))
    assert stat["se_views"] == pytest.approx(float(diffs.std() / 2))
    assert stat["se_photos"] == pytest.approx(float(torch.tensor([0.05, 0.0]).std() / math.sqrt(2)))
    assert (stat["photos_better"], stat["photos"]) == (1, 2)


def _photos(gain: dict[str, float], se: float, held: float) -> dict:
    schedules = {}
    for schedule in ("r=8", "r=13", "r=16", "keep=0.5"):
        rows = {name: {"vs_default": {"diff": gain.get(name, -1e-3), "se_photos": se}} for name in CANDIDATES}
        held_rows = {name: {"vs_default": {"diff": held, "se_photos": se}} for name in CANDIDATES}
        schedules[schedule] = {"calibration": rows, "held_out": held_rows}
    return {"schedules": schedules}


def test_rule_needs_a_resolved_gain_everywhere_then_held_out_confirmation():
    energy, attention = CANDIDATES
    chosen = apply_rule(_photos({energy: 2e-3, attention: 1e-3}, se=4e-4, held=5e-4), calibration_only=False)
    assert chosen["chosen_on_calibration"] == energy and chosen["confirmed_on_held_out"]
    unresolved = apply_rule(_photos({energy: 2e-3}, se=1.5e-3, held=5e-4), calibration_only=False)
    assert unresolved["chosen_on_calibration"] is None
    refuted = apply_rule(_photos({attention: 2e-3}, se=4e-4, held=-5e-4), calibration_only=False)
    assert refuted["chosen_on_calibration"] == attention and not refuted["confirmed_on_held_out"]


def test_configs_scale_r_and_keep_the_keep_target():
    assert config_for({"r": 13}, DEFAULT, scale=400 / 256).r == 20
    energy = config_for({"keep": 0.5}, "mean energy")
    assert energy.keep == 0.5 and energy.selection is Selection.ENERGY


def test_swapped_sets_swap_a_and_b_only_inside():
    metric = torch.randn(1, 9, 4)
    with swapped_sets():
        swapped = match_tokens(metric, 1, 2)
    plain = match_tokens(metric, 1, 2)
    assert set(swapped.src[0].tolist()) <= {1, 3, 5, 7} and set(plain.src[0].tolist()) <= {2, 4, 6, 8}
