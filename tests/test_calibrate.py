"""`calibrate_switch` (the switch: linearity probe and end-to-end search) and `calibrate_ops` (every block's step
operation, end to end)."""

import copy
import random

import pytest
import torch

import tofu_edge
from tests.conftest import images_for, tiny_model
from tofu_edge import FusionConfig
from tofu_edge.calibrate import OpsRunner, calibrate_ops, calibrate_switch, switch_ops
from tofu_edge.config import Mode, StepOp


def make_affine(block):
    """g(t) = t + mlp(t) with no norm and no activation: an affine map, which commutes with averaging."""
    block.norm2, block.mlp.act = torch.nn.Identity(), torch.nn.Identity()


def test_affine_blocks_merge_exactly():
    model = tiny_model("vit")
    for block in model.blocks:
        make_affine(block)
    result = calibrate_switch(model, images_for(model, batch=4), FusionConfig(r=2), method="probe")
    assert all(p.merge_error < 1e-5 < p.prune_error for p in result.probes)
    assert result.switch == result.probe_switch == 0 and result.search_cosines is None


def test_search_picks_the_switch_closest_to_the_unfused_outputs():
    model = tiny_model("deit3_layerscale")
    images = images_for(model, batch=4)
    result = calibrate_switch(model, images, FusionConfig(r=3))
    assert len(result.search_cosines) == 5 and result.search_cosines[result.switch] == max(result.search_cosines)
    fused = tofu_edge.fuse(copy.deepcopy(model), FusionConfig(r=3, mode="tofu", switch=result.switch))
    with torch.no_grad():
        cosine = torch.nn.functional.cosine_similarity(fused(images), model(images), dim=1).mean()
    assert float(cosine) == pytest.approx(result.search_cosines[result.switch], abs=1e-6)
    assert not tofu_edge.is_fused(model)


def test_unknown_method_is_an_error():
    model = tiny_model("vit")
    with pytest.raises(tofu_edge.ConfigError, match="unknown calibration method 'fast'"):
        calibrate_switch(model, images_for(model), FusionConfig(r=1), method="fast")


def test_blocks_without_reduction_do_not_count():
    model = tiny_model("vit")
    result = calibrate_switch(model, images_for(model, batch=2), FusionConfig(r=[2, 0, 2, 0]))
    assert [p.r for p in result.probes] == [2, 0, 2, 0]
    assert result.probes[1].merge_error == result.probes[1].prune_error == 0.0


# --- per-block calibration (calibrate_ops) and the runner behind it -----------------------------------------------

SCORE_TOLERANCE = 1e-6  # a score recomputed with a freshly fused model: the same blocks, the same float32 sums
R_PER_BLOCK = 3  # deit3_layerscale tiny: 17 tokens, 4 blocks; 3 per block is possible in all of them


def cosine_of(model, images, config) -> float:
    fused = tofu_edge.fuse(copy.deepcopy(model), config)
    with torch.no_grad():
        return float(torch.nn.functional.cosine_similarity(fused(images), model(images), dim=1).mean())


def test_runner_matches_the_fused_model_for_any_operations(family):
    model = tiny_model(family)
    images = images_for(model, batch=3)
    generator = random.Random(0)
    lists = [tuple(generator.choice(list(StepOp)) for _ in model.blocks) for _ in range(6)]
    runner = OpsRunner(model, images, FusionConfig(r=2))
    for ops, outputs in zip(lists, runner.run_many(lists), strict=True):
        fused = tofu_edge.fuse(copy.deepcopy(model), FusionConfig(r=2, ops=ops))
        with torch.no_grad():
            torch.testing.assert_close(outputs, fused(images), rtol=0, atol=0)


def test_runner_runs_shared_leading_blocks_once():
    model = tiny_model("vit")
    runner = OpsRunner(model, images_for(model), FusionConfig(r=2))
    runner.run_many([switch_ops(s, 4) for s in range(5)])
    assert runner.blocks_run == 4 + (4 + 3 + 2 + 1)  # the prune chain, then each switch's MLERP blocks


def test_per_block_search_gives_one_operation_per_block():
    model = tiny_model("deit3_layerscale")
    result = calibrate_ops(model, images_for(model, batch=4), FusionConfig(r=R_PER_BLOCK))
    assert len(result.ops) == len(model.blocks) and set(result.ops) <= set(StepOp)
    assert result.config.mode is Mode.PER_BLOCK and result.config.ops == result.ops
    assert result.config.r == R_PER_BLOCK


def test_per_block_search_improves_on_its_start_on_the_calibration_images():
    model = tiny_model("avg_pool")  # every block's step reaches the output (no class token to read out)
    images = images_for(model, batch=4)
    result = calibrate_ops(model, images, FusionConfig(r=2))
    best_uniform = max(result.start_scores.values())
    assert result.start_score == best_uniform
    assert result.changes and result.score > result.start_score
    assert result.score == pytest.approx(cosine_of(model, images, result.config), abs=SCORE_TOLERANCE)
    assert not tofu_edge.is_fused(model)


def test_per_block_search_without_passes_returns_the_best_switch_or_mean():
    model = tiny_model("deit3_layerscale")
    images = images_for(model, batch=4)
    result = calibrate_ops(model, images, FusionConfig(r=R_PER_BLOCK), passes=0)
    assert result.ops == result.start_ops and not result.changes
    switch = calibrate_switch(model, images, FusionConfig(r=R_PER_BLOCK))
    assert result.start_scores[f"switch {switch.switch}"] == pytest.approx(max(switch.search_cosines), abs=1e-12)


def test_per_block_search_is_deterministic():
    model = tiny_model("deit3_layerscale")
    images = images_for(model, batch=4)
    first = calibrate_ops(model, images, FusionConfig(r=R_PER_BLOCK))
    second = calibrate_ops(copy.deepcopy(model), images.clone(), FusionConfig(r=R_PER_BLOCK))
    assert first.to_dict() == second.to_dict()


def test_per_block_search_reports_progress_up_to_its_total():
    model = tiny_model("vit")
    calls = []
    result = calibrate_ops(model, images_for(model), FusionConfig(r=2), progress=lambda *call: calls.append(call))
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] and result.evaluations == len(calls) - 1


def test_per_block_search_skips_blocks_that_remove_nothing():
    model = tiny_model("vit")
    result = calibrate_ops(model, images_for(model), FusionConfig(r=(2, 0, 2, 0)))
    assert {c.block for c in result.changes} <= {0, 2}
    assert result.ops[1] == result.start_ops[1] and result.ops[3] == result.start_ops[3]


def test_per_block_search_keeps_to_its_choices():
    model = tiny_model("vit")
    result = calibrate_ops(model, images_for(model), FusionConfig(r=2), choices=("prune", "mean"))
    assert set(result.ops) <= {StepOp.PRUNE, StepOp.MEAN} and set(result.start_scores) == {"switch 4", "mean"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(choices=()), "at least one step operation"),
        (dict(choices=("blend",)), "unknown step operation 'blend'"),
        (dict(passes=-1), "passes >= 0"),
    ],
)
def test_per_block_search_bad_options(kwargs, message):
    model = tiny_model("vit")
    with pytest.raises(tofu_edge.ConfigError, match=message):
        calibrate_ops(model, images_for(model), FusionConfig(r=1), **kwargs)


def test_switch_search_refuses_the_per_block_method():
    model = tiny_model("vit")
    with pytest.raises(tofu_edge.ConfigError, match="calibrate_ops"):
        calibrate_switch(model, images_for(model), FusionConfig(r=1), method="per-block")
