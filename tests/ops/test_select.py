"""Selection strategies (`tofu_edge.ops.select`): the vectorized step and the class attention against their loop
references, exact ties, the static protected count, and refusals where a strategy cannot run."""

from __future__ import annotations

import copy
from unittest import mock

import pytest
import torch

import tofu_edge
from tests.conftest import images_for, tiny_model
from tofu_edge import FusionConfig
from tofu_edge.config import Selection, StepOp
from tofu_edge.errors import ConfigError
from tofu_edge.ops import fuse_tokens
from tofu_edge.ops.match import cosine_scores
from tofu_edge.ops.reference import reference_protected, reference_scores, reference_step
from tofu_edge.ops.select import energy_scores, protect_top, select_tokens
from tofu_edge.patch.attention import class_attention, size_bias
from tofu_edge.patch.reference import reference_forward
from tofu_edge.plan import protected_count

STRATEGIES = [Selection.ENERGY, Selection.ATTENTION]
OPS = [StepOp.PRUNE, StepOp.MEAN, StepOp.MLERP]


def random_inputs(batch=3, num_tokens=17, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, num_tokens, 8, generator=generator) * torch.rand(batch, num_tokens, 1, generator=generator)
    metric = torch.randn(batch, num_tokens, 6, generator=generator)
    size = torch.randint(1, 5, (batch, num_tokens, 1), generator=generator).float()
    attention = torch.rand(batch, num_tokens, generator=generator).softmax(dim=-1)
    return x, size, metric, attention


@pytest.mark.parametrize("selection", STRATEGIES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("num_prefix", [1, 2])
@pytest.mark.parametrize(("r", "protect"), [(1, 1), (3, 2), (7, 1)])
def test_step_matches_the_loop_reference(selection, op, num_prefix, r, protect):
    x, size, metric, attention = random_inputs()
    match = select_tokens(metric, num_prefix, r, selection, protect, attention)
    tokens, sizes = fuse_tokens(x, size, match, op)
    for b in range(x.shape[0]):
        want_x, want_size = reference_step(
            x[b], size[b, :, 0], metric[b], num_prefix, r, op, selection, protect, attention[b]
        )
        torch.testing.assert_close(tokens[b], want_x, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sizes[b, :, 0], want_size)


@pytest.mark.parametrize("selection", STRATEGIES)
def test_protected_tokens_are_never_sources_and_the_choice_differs_from_bipartite(selection):
    x, size, metric, attention = random_inputs(batch=4, num_tokens=33, seed=3)
    bipartite = select_tokens(metric, 1, 6, Selection.BIPARTITE, 0)
    selected = select_tokens(metric, 1, 6, selection, 5, attention)
    for b in range(4):
        scores = reference_scores(metric[b], 1)
        protected = reference_protected(scores, 33, 1, selection, 5, attention[b])
        assert len(protected) == 5
        assert not protected & set(selected.src[b].tolist())
    assert not torch.equal(bipartite.src, selected.src)


def test_energy_flattens_loose_similarities():
    scores = torch.tensor([[[0.9, 0.5, 0.0], [-1.0, 0.2, 0.6]]])
    first = (0.9 + 0.5 + (torch.e**-0.5 - 1)) / 3
    second = ((torch.e**-1.5 - 1) + (torch.e**-0.3 - 1) + 0.6) / 3
    want = torch.tensor([[first, second]])
    torch.testing.assert_close(energy_scores(scores, margin=0.5), want)


@pytest.mark.parametrize("exporting", [False, True])
def test_protect_top_breaks_ties_by_the_lower_index(exporting):
    priority = torch.tensor([[0.5, 0.9, 0.5, 0.9, 0.1, 0.5], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    with mock.patch("torch.compiler.is_exporting", return_value=exporting):
        mask = protect_top(priority, 3)
    assert mask.tolist() == [[True, True, False, True, False, False], [True, True, True, False, False, False]]


@pytest.mark.parametrize("family", ["vit", "qk_norm", "deit_distilled"])
@pytest.mark.parametrize("sized", [False, True])
def test_class_attention_equals_the_explicit_softmax(family, sized):
    model = tiny_model(family)
    block = model.blocks[0]
    x = torch.randn(2, 17, model.embed_dim)
    size = torch.randint(1, 4, (2, 17, 1)).float() if sized else None
    bias = size_bias(size) if sized else None
    normed = block.norm1(x)
    attn = block.attn
    qkv = attn.qkv(normed).reshape(2, 17, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    logits = q @ k.transpose(-2, -1) * attn.scale
    if sized:
        logits = logits + bias
    want = logits.softmax(dim=-1)[:, :, 0].mean(dim=1)
    torch.testing.assert_close(class_attention(attn, normed, bias), want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("selection", STRATEGIES)
@pytest.mark.parametrize("op", ["mean", "mlerp", "tofu"])
@pytest.mark.parametrize("family", ["vit", "deit3_layerscale", "qk_norm"])
def test_fused_model_matches_its_loop_reference(selection, op, family):
    model = tofu_edge.fuse(tiny_model(family), FusionConfig(r=2, mode=op, selection=selection))
    images = images_for(model, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference_forward(model, images), atol=2e-5, rtol=1e-4)


def test_selection_changes_a_fused_model_and_bipartite_changes_nothing():
    base = tiny_model("vit")
    images = images_for(base, batch=2)
    outputs = {}
    with torch.no_grad():
        for selection in Selection:
            model = tofu_edge.fuse(copy.deepcopy(base), FusionConfig(r=3, selection=selection))
            outputs[selection] = model(images)
        plain = tofu_edge.fuse(copy.deepcopy(base), FusionConfig(r=3))(images)
    assert torch.equal(outputs[Selection.BIPARTITE], plain)
    assert not torch.allclose(outputs[Selection.ENERGY], plain)
    assert not torch.allclose(outputs[Selection.ATTENTION], plain)


def test_protected_count_is_static_and_leaves_r_candidates():
    assert protected_count(128, 16, Selection.BIPARTITE) == 0
    assert protected_count(128, 16, Selection.ENERGY) == 13
    assert protected_count(128, 0, Selection.ENERGY) == 0
    assert protected_count(128, 16, Selection.ATTENTION) == 26
    assert protected_count(10, 9, Selection.ATTENTION) == 1
    assert protected_count(10, 10, Selection.ATTENTION) == 0
    plan = tofu_edge.fuse(tiny_model("vit"), FusionConfig(r=2, selection="energy")).tofu_plan
    assert [b.protect for b in plan.blocks] == [1, 1, 1, 1]  # |A| = 8, 7, 6, 5 (17 tokens in, r = 2)
    assert plan.blocks[0].to_dict()["selection"] == "energy"


def test_bad_selection_and_attention_without_a_class_token_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown selection 'pitome'; choose one of bipartite, energy, attention"):
        FusionConfig(selection="pitome")
    with pytest.raises(ConfigError, match="has no class token"):
        tofu_edge.fuse(tiny_model("avg_pool"), FusionConfig(r=2, selection="attention"))


@pytest.mark.parametrize("step", ["triton", "plugin"])
def test_steps_other_than_the_torch_ops_refuse_a_selection(step):
    model = tofu_edge.fuse(tiny_model("vit"), FusionConfig(r=2, selection="energy"))
    if step == "plugin":
        from tofu_edge.export.plugin import use_plugin_step

        with pytest.raises(ConfigError, match="selection=energy runs on the PyTorch ops and in the portable ONNX"):
            use_plugin_step(model)
    else:
        with pytest.raises(ConfigError, match="plugin flavour and the plugin kernels .triton_fusion_step here."):
            tofu_edge.use_step(model, "triton")
    tofu_edge.use_step(model, "torch")  # the PyTorch ops run it


def test_scores_for_energy_are_the_matching_scores():
    _, _, metric, _ = random_inputs()
    scores = cosine_scores(metric, 1)
    assert energy_scores(scores).shape == scores.shape[:2]
