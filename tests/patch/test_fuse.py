"""`fuse` / `unfuse` on every supported family, against timm itself and the loop reference."""

import pytest
import torch
from timm.models.vision_transformer import Block, VisionTransformer

import tofu_edge
from tests.conftest import TINY, images_for, tiny_model
from tofu_edge import FusionConfig, InputShapeError, UnsupportedModelError
from tofu_edge.patch.attention import mean_key, size_bias
from tofu_edge.patch.reference import reference_forward

ATOL = 1e-5


@pytest.mark.parametrize("fused_attn", [True, False])
def test_r0_equals_the_unfused_model_exactly(family, fused_attn):
    model = tiny_model(family, fused_attn)
    images = images_for(model)
    with torch.no_grad():
        expected = model(images)
        tofu_edge.fuse(model, FusionConfig(r=0))
        assert torch.equal(model(images), expected)


@pytest.mark.parametrize("fused_attn", [True, False])
def test_attention_residual_is_timm_attention_with_the_size_bias(family, fused_attn):
    model = tiny_model(family, fused_attn)
    tofu_edge.fuse(model, FusionConfig(r=[1, 1], mode="mean"))  # block 1 sees merged tokens: proportional attention
    block = model.blocks[1]
    num_tokens = block.tofu_step.tokens_in
    x = torch.randn(2, num_tokens, model.embed_dim)
    size = torch.randint(1, 4, (2, num_tokens, 1)).float()
    bias = size.log().transpose(1, 2)[:, None]
    with torch.no_grad():
        want = x + block.ls1(block.attn(block.norm1(x), attn_mask=bias))
        got, metric, attention = block.attention_residual(x, size)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
        torch.testing.assert_close(size_bias(size), bias, atol=0, rtol=0)
    assert metric.shape == (2, num_tokens, block.attn.head_dim)
    assert attention is None  # only selection=attention needs the class token's attention


def test_mean_key_is_the_keys_averaged_over_heads(family):
    model = tiny_model(family)
    attn = model.blocks[1].attn
    x = torch.randn(2, tofu_edge.describe_vit(model).num_tokens, model.embed_dim)
    with torch.no_grad():
        qkv = attn.qkv(x).reshape(*x.shape[:2], 3, attn.num_heads, attn.head_dim)
        want = attn.k_norm(qkv[:, :, 1].transpose(1, 2)).mean(dim=1)  # [B, N, D], timm's own keys
        torch.testing.assert_close(mean_key(attn, x), want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode", ["tofu", "mlerp", "mean", "prune"])
def test_fused_model_matches_the_reference(family, mode):
    model = tiny_model(family)
    limit = 3 if family != "dinov2_registers" else 2
    config = FusionConfig(r=limit, mode=mode, switch=1)
    images = images_for(model)
    with torch.no_grad():
        tofu_edge.fuse(model, config)
        got = model(images)
        want = reference_forward(model, images)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_fused_model_without_proportional_attention_matches_the_reference():
    model = tiny_model("vit")
    images = images_for(model)
    with torch.no_grad():
        tofu_edge.fuse(model, FusionConfig(r=3, mode="mean", prop_attn=False))
        torch.testing.assert_close(model(images), reference_forward(model, images), atol=ATOL, rtol=0)


def test_r_at_the_limit_of_every_block_runs():
    model = tiny_model("vit")
    tofu_edge.fuse(model, FusionConfig(r=[8, 4, 2, 1], mode="mlerp"))
    assert model.tofu_plan.tokens_out == 2
    with torch.no_grad():
        out = model(images_for(model))
    assert out.shape == (2, model.num_classes) and torch.isfinite(out).all()


def test_state_dict_keys_and_values_unchanged(family):
    model = tiny_model(family)
    before = model.state_dict()
    tofu_edge.fuse(model, FusionConfig(r=2))
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_unfuse_restores_the_original_exactly(family):
    model = tiny_model(family)
    original_class = type(model)
    images = images_for(model)
    with torch.no_grad():
        expected = model(images)
        tofu_edge.fuse(model, FusionConfig(r=3, mode="mean"))
        assert not torch.equal(model(images), expected)
        tofu_edge.unfuse(model)
        assert torch.equal(model(images), expected)
    assert type(model) is original_class and all(type(b) is Block for b in model.blocks)
    assert not hasattr(model, "tofu_plan") and not tofu_edge.is_fused(model)


def test_fuse_twice_is_the_same_as_fusing_once():
    model, twice = tiny_model("vit"), tiny_model("vit")
    images = images_for(model)
    tofu_edge.fuse(model, FusionConfig(r=3, mode="mlerp"))
    tofu_edge.fuse(twice, FusionConfig(r=1, mode="mean"))
    tofu_edge.fuse(twice, FusionConfig(r=3, mode="mlerp"))
    with torch.no_grad():
        assert torch.equal(model(images), twice(images))
    assert type(twice).__mro__.count(VisionTransformer) == 1
    assert twice.tofu_plan == model.tofu_plan


def test_fuse_returns_the_model_and_exposes_the_plan():
    model = tiny_model("vit")
    assert tofu_edge.fuse(model, FusionConfig(r=2)) is model
    assert model.tofu_plan.r_schedule == (2, 2, 2, 2)
    assert [b.tokens_out for b in model.tofu_plan.blocks] == [15, 13, 11, 9]


def test_fused_output_token_count_follows_the_plan():
    model = tiny_model("deit_distilled")
    tofu_edge.fuse(model, FusionConfig(r=[3, 2]))
    with torch.no_grad():
        assert model.forward_features(images_for(model)).shape == (2, 18 - 5, TINY["embed_dim"])


def test_impossible_schedule_leaves_the_model_untouched():
    model = tiny_model("vit")
    with pytest.raises(tofu_edge.ScheduleError, match="block 1"):
        tofu_edge.fuse(model, FusionConfig(r=[8, 8]))
    assert not tofu_edge.is_fused(model)


def test_wrong_image_size_is_a_clear_error():
    model = tofu_edge.fuse(tiny_model("vit"), FusionConfig(r=2))
    with pytest.raises(InputShapeError, match=r"fused for images of shape \[B, 3, 32, 32\], got \[1, 3, 64, 64\]"):
        model(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize(
    "name, overrides, what",
    [
        ("eva02_tiny_patch14_224", dict(img_size=28, depth=1), "is a Eva"),
        ("vit_small_patch16_224", dict(global_pool="map"), "pools with attention"),
        ("vit_small_patch16_224", dict(dynamic_img_size=True), "dynamic_img_size=True"),
        ("vit_small_patch16_224", dict(global_pool="avgmax", class_token=False), "global_pool='avgmax'"),
    ],
)
def test_unsupported_models_are_refused_with_what_is_supported(name, overrides, what):
    model = tofu_edge.create_model(name, **{**TINY, **overrides})
    with pytest.raises(UnsupportedModelError, match=what) as error:
        tofu_edge.fuse(model, FusionConfig(r=1))
    assert "tofu-edge supports timm VisionTransformer" in str(error.value)


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(tofu_edge.UnknownModelError, match="did you mean deit_small"):
        tofu_edge.create_model("deit_smal")


@pytest.mark.parametrize("mode", ["tofu", "mean", "mlerp"])
def test_all_constant_image_ties_every_score_and_gives_the_same_result_every_run(mode):
    model = tiny_model("vit")
    with torch.no_grad():
        model.pos_embed.zero_()  # every patch token identical: every matching score tied
    tofu_edge.fuse(model, FusionConfig(r=3, mode=mode, switch=2))
    flat = torch.full((2, 3, 32, 32), 0.5)
    with torch.no_grad():
        first = model(flat)
        assert all(torch.equal(first, model(flat)) for _ in range(3))
        torch.testing.assert_close(first, reference_forward(model, flat), atol=ATOL, rtol=0)
