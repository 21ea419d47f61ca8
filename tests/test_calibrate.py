"""`calibrate_switch`: the linearity probe picks where merging starts."""

import copy

import pytest
import torch

import tofu_edge
from tests.conftest import images_for, tiny_model
from tofu_edge import FusionConfig
from tofu_edge.calibrate import calibrate_switch


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
