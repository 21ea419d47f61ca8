"""`track_sources`: the source matrix follows every patch through fusion; the groups and their picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tofu_edge
from tests.conftest import images_for, tiny_model
from tofu_edge.errors import ConfigError
from tofu_edge.visualize import patch_groups, render_groups, track_sources

TOKEN_TOLERANCE = 1e-5

# tiny models have 16 patches and 4 blocks; (family, config) pairs cover prune, MLERP and mean, 1 and 2 prefixes
CASES = [
    ("vit", tofu_edge.FusionConfig(r=2, mode="tofu", switch=2)),  # prune in blocks 0-1, MLERP in 2-3
    ("deit_distilled", tofu_edge.FusionConfig(r=(3, 2, 2, 1), mode="mean")),
    ("dinov2_registers", tofu_edge.FusionConfig(r=(4, 2), mode="prune")),
    ("avg_pool", tofu_edge.FusionConfig(r=2, mode="mlerp", prop_attn=False)),
]


@pytest.mark.parametrize("family, config", CASES, ids=[c[0] for c in CASES])
def test_every_patch_is_in_one_final_token_or_pruned_and_groups_match_sizes(family, config):
    model = tofu_edge.fuse(tiny_model(family), config)
    images = images_for(model, batch=2)
    tracked = track_sources(model, images)
    with torch.inference_mode():
        tokens, size = model.forward_tokens(images)
    torch.testing.assert_close(tracked.tokens, tokens, rtol=0.0, atol=TOKEN_TOLERANCE)  # the same forward

    sources = tracked.sources
    plan = model.tofu_plan
    assert sources.shape == (2, plan.tokens_out, model.patch_embed.num_patches)
    assert set(sources.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(sources.sum(dim=1) <= 1)  # a patch is in at most one final token
    assert torch.all(sources[:, : model.num_prefix_tokens] == 0)  # prefix tokens hold no patch
    expected_size = torch.ones_like(tokens[..., :1]) if size is None else size
    held = sources.sum(dim=2, keepdim=True)[:, model.num_prefix_tokens :]
    assert torch.equal(held, expected_size[:, model.num_prefix_tokens :])  # group sizes are the model's sizes
    pruned = sum(step.r for step in plan.blocks if step.op.value == "prune")
    assert tracked.pruned.sum(dim=1).tolist() == [pruned, pruned]


def test_unfused_schedule_keeps_every_patch_as_its_own_token():
    model = tofu_edge.fuse(tiny_model("vit"), tofu_edge.FusionConfig(r=0))
    tracked = track_sources(model, images_for(model, batch=1))
    assert torch.equal(tracked.sources[0, 1:], torch.eye(model.patch_embed.num_patches))


def test_a_model_that_is_not_fused_is_refused():
    model = tiny_model("vit")
    with pytest.raises(ConfigError, match="needs a fused model"):
        track_sources(model, images_for(model))


def test_patch_groups_and_render_mark_pruned_patches():
    sources = torch.tensor([[0.0, 0, 0, 0], [1, 0, 0, 1], [0, 1, 0, 0]])  # prefix, {0, 3}, {1}; 2 pruned
    groups = patch_groups(sources, (2, 2))
    assert groups.tolist() == [[1, 2], [-1, 1]]
    image = np.full((16, 16, 3), 200, dtype=np.uint8)
    picture = render_groups(image, groups, "legend", colours="random")
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[1] > 2 * picture.shape[0] - 200
