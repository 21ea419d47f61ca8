"""`tofu_edge.diffusion.apply` / `remove` on tiny random diffusers models: the fuse/unfuse contract."""

from __future__ import annotations

import pytest
import torch

import tofu_edge.diffusion as td
from tests.diffusion.conftest import run, step_kwargs, tiny_model
from tofu_edge.errors import ConfigError, InputShapeError, ScheduleError, UnsupportedModelError

OPS = ("prune", "mean", "mlerp")
# fused outputs stay close to unfused ones on random weights, but must differ (the fusion did something)
MIN_COSINE_TO_UNFUSED = 0.9
ALL_MODULES = dict(merge_attn=True, merge_crossattn=True, merge_mlp=True)


@pytest.mark.parametrize("op", OPS)
def test_every_op_keeps_the_output_shape_and_changes_the_output(family, op):
    model = tiny_model(family)
    kwargs = step_kwargs(model)
    unfused = run(model, kwargs)
    td.apply(model, td.DiffusionFusionConfig(ratio=0.5, op=op, **ALL_MODULES))
    fused = run(model, kwargs)
    assert fused.shape == unfused.shape
    assert not torch.equal(fused, unfused)
    cosine = torch.nn.functional.cosine_similarity(fused.flatten(1), unfused.flatten(1))
    assert cosine.min() > MIN_COSINE_TO_UNFUSED


def test_ratio_zero_is_the_original_model_exactly(family):
    model = tiny_model(family)
    kwargs = step_kwargs(model)
    unfused = run(model, kwargs)
    td.apply(model, td.DiffusionFusionConfig(ratio=0.0, **ALL_MODULES))
    assert model.tofu_plan.steps == ()
    assert torch.equal(run(model, kwargs), unfused)


def test_remove_is_exact_and_apply_twice_reapplies(family):
    model = tiny_model(family)
    kwargs = step_kwargs(model)
    unfused = run(model, kwargs)
    classes = {name: type(m) for name, m in model.named_modules()}
    td.apply(model, td.DiffusionFusionConfig(ratio=0.3, op="mean"))
    once = run(model, kwargs)
    td.apply(model, td.DiffusionFusionConfig(ratio=0.3, op="mean"))
    assert torch.equal(run(model, kwargs), once)
    td.apply(model, td.DiffusionFusionConfig(ratio=0.5, op="prune", merge_mlp=True))  # re-applying replaces
    assert model.tofu_plan.config.op.value == "prune"
    td.remove(model)
    assert {name: type(m) for name, m in model.named_modules()} == classes
    assert not td.is_applied(model)
    assert torch.equal(run(model, kwargs), unfused)
    assert td.remove(model) is model  # removing twice is a no-op


def test_weights_and_state_dict_are_untouched(family):
    model = tiny_model(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    td.apply(model, td.DiffusionFusionConfig(ratio=0.5, op="mlerp", **ALL_MODULES))
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not any("tofu" in name for name, _ in model.named_buffers())


def test_fused_model_is_deterministic(family):
    model = tiny_model(family)
    kwargs = step_kwargs(model)
    td.apply(model, td.DiffusionFusionConfig(ratio=0.5, op="mean", merge_mlp=True))
    assert torch.equal(run(model, kwargs), run(model, kwargs))


def test_ratios_per_level_and_max_downsample():
    model = tiny_model("unet")  # levels 0 (16x16) and 1 (8x8)
    plan = td.plan_fusion(model, td.DiffusionFusionConfig(ratio=0.5))
    assert {s.level for s in plan.steps} == {0}
    plan = td.plan_fusion(model, td.DiffusionFusionConfig(ratio=0.5, max_downsample=2))
    assert {(s.level, s.r) for s in plan.steps} == {(0, 128), (1, 32)}
    plan = td.plan_fusion(model, td.DiffusionFusionConfig(ratio=(0.25, 0.5)))
    assert {(s.level, s.r) for s in plan.steps} == {(0, 64), (1, 32)}
    assert plan.to_dict()["levels"][0]["modules"] == {"attn1": 3}  # 1 down + 2 up blocks at level 0


def test_sample_size_fixes_the_token_counts():
    model = tiny_model("unet")
    td.apply(model, td.DiffusionFusionConfig(ratio=0.5), sample_size=8)
    assert model.tofu_plan.steps[0].num_tokens == 64
    run(model, step_kwargs(model, size=8))
    with pytest.raises(InputShapeError, match="was fused for a 8x8 token grid") as error:
        run(model, step_kwargs(model, size=16))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, True, "half"])
def test_ratio_out_of_range_is_a_one_line_error(ratio):
    with pytest.raises(ConfigError, match=r"ratio must be in \[0, 1\)") as error:
        td.DiffusionFusionConfig(ratio=ratio)
    assert "\n" not in str(error.value)


def test_bad_options_are_one_line_errors():
    for kwargs, message in (
        (dict(op="average"), "unknown op 'average'; choose one of prune, mean, mlerp"),
        (dict(max_downsample=3), "max_downsample must be one of"),
        (dict(ratio=(0.5,), max_downsample=2), "either per-level ratios or max_downsample"),
        (dict(sx=1, sy=1), "sx \\* sy must be at least 2"),
        (dict(destinations="random"), "unknown destinations 'random'"),
    ):
        with pytest.raises(ConfigError, match=message):
            td.DiffusionFusionConfig(**kwargs)


def test_a_ratio_above_what_a_level_can_merge_names_the_limit():
    model = tiny_model("unet")
    with pytest.raises(ScheduleError, match="ratio 0.8 merges 204 tokens.*at most 0.75"):
        td.apply(model, td.DiffusionFusionConfig(ratio=0.8))
    assert not td.is_applied(model)  # nothing changed


def test_a_latent_size_the_model_cannot_take_is_refused():
    with pytest.raises(ConfigError, match="not a multiple of 2"):
        td.apply(tiny_model("unet"), sample_size=15)
    with pytest.raises(ConfigError, match="not a multiple of the patch size 2"):
        td.apply(tiny_model("dit"), sample_size=7)


def test_unsupported_models_and_blocks_list_what_is_supported():
    with pytest.raises(UnsupportedModelError, match="Linear is not supported; tofu_edge.diffusion supports diffusers"):
        td.apply(torch.nn.Linear(2, 2))
    model = tiny_model("unet")
    model.down_blocks[0].attentions[0].transformer_blocks[0].only_cross_attention = True
    with pytest.raises(UnsupportedModelError, match="only_cross_attention=True; tofu_edge.diffusion supports") as error:
        td.apply(model)
    assert "\n" not in str(error.value)
    model = tiny_model("unet")
    model.set_attn_processor(_CustomProcessor())
    with pytest.raises(UnsupportedModelError, match="processor _CustomProcessor"):
        td.apply(model)


def test_a_self_attention_mask_is_refused():
    model = tiny_model("unet")
    td.apply(model, td.DiffusionFusionConfig(ratio=0.5))
    attn = model.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    with pytest.raises(UnsupportedModelError, match="self-attention mask"):
        attn(torch.randn(1, 256, 32), attention_mask=torch.zeros(1, 1, 256))


class _CustomProcessor:
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        return hidden_states


def test_sd2_layout_with_linear_projections():
    from diffusers import UNet2DConditionModel

    from tests.diffusion.conftest import TINY_UNET

    torch.manual_seed(0)
    model = UNet2DConditionModel(**{**TINY_UNET, "use_linear_projection": True, "attention_head_dim": (2, 4)}).eval()
    kwargs = step_kwargs(model)
    unfused = run(model, kwargs)
    td.apply(model, td.DiffusionFusionConfig(ratio=0.5, op="mlerp"))
    assert run(model, kwargs).shape == unfused.shape
    td.remove(model)
    assert torch.equal(run(model, kwargs), unfused)
