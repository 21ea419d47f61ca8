"""Step backends (`tofu_edge.patch.steps`): the hook every fused block calls, `use_step`, and the automatic choice."""

from __future__ import annotations

import copy

import pytest
import torch

import tofu_edge
from tests.conftest import images_for, tiny_model
from tofu_edge import FusionConfig
from tofu_edge.errors import ConfigError, MissingDependencyError
from tofu_edge.ops.triton_step import triton_available
from tofu_edge.patch.steps import auto_step, step_for, torch_step, triton_fusion_step, use_step

CONFIG = FusionConfig(r=2, mode="tofu", switch=2)
TRITON_ATOL = 1e-5  # the Triton step's fp32 tolerance against the PyTorch ops (tests/ops/test_triton_step.py)


@pytest.fixture
def fused():
    return tofu_edge.fuse(tiny_model("deit3_layerscale"), CONFIG)


def test_every_block_runs_the_automatic_step_by_default(fused):
    assert all(block.tofu_fusion is auto_step for block in fused.blocks)


def test_a_chosen_step_runs_in_every_block_and_auto_restores_the_default(fused):
    calls = []

    def counting(*args):
        calls.append(args[-2])  # r
        return torch_step(*args)

    images = images_for(fused)
    with torch.no_grad():
        want = fused(images)
        got = use_step(fused, counting)(images)
    assert calls == [block.r for block in fused.tofu_plan.blocks if block.r > 0]
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    use_step(fused, "auto")
    assert all("tofu_fusion" not in vars(block) for block in fused.blocks)


def test_unfuse_forgets_the_chosen_step(fused):
    use_step(fused, "torch")
    tofu_edge.unfuse(fused)
    assert all("tofu_fusion" not in vars(block) for block in fused.blocks)


def test_bad_choices_are_one_line_errors(fused):
    with pytest.raises(ConfigError, match="unknown fusion step 'cuda'"):
        use_step(fused, "cuda")
    with pytest.raises(ConfigError, match="use_step needs a fused model"):
        use_step(tiny_model("vit"), "torch")


def test_auto_keeps_the_pytorch_ops_on_a_cpu(fused, monkeypatch):
    monkeypatch.setattr("tofu_edge.patch.steps.triton_fusion_step", _fail)
    images = images_for(fused)
    with torch.no_grad():
        fused(images)  # the interpreter may be on: auto still takes the PyTorch ops for CPU tensors


def _fail(*args):
    raise AssertionError("the Triton step ran on CPU tensors")


@pytest.mark.skipif(not triton_available("cpu"), reason="needs triton's interpreter (TRITON_INTERPRET=1)")
def test_a_model_on_the_triton_step_gives_the_pytorch_outputs(fused):
    images = images_for(fused)
    on_triton = use_step(copy.deepcopy(fused), "triton")
    with torch.no_grad():
        torch.testing.assert_close(on_triton(images), fused(images), atol=TRITON_ATOL, rtol=TRITON_ATOL)


def test_the_triton_step_where_it_cannot_run_says_so(monkeypatch):
    monkeypatch.setattr("tofu_edge.patch.steps._triton_runs_on", lambda device: False)
    x = torch.randn(1, 9, 4)
    with pytest.raises(MissingDependencyError, match="the Triton fusion step cannot run on cpu here"):
        triton_fusion_step(x, None, x, 1, 2, tofu_edge.StepOp.MEAN)


def test_step_names_resolve():
    assert (
        step_for("torch") is torch_step and step_for("triton") is triton_fusion_step and step_for("auto") is auto_step
    )


@pytest.mark.skipif(not triton_available("cpu"), reason="needs triton's interpreter (TRITON_INTERPRET=1)")
def test_a_model_on_the_triton_step_compiles_whole_and_exports(fused):
    """No graph break in torch.compile(fullgraph=True); torch.export keeps each step as one custom-op node."""
    model = use_step(copy.deepcopy(fused), "triton")
    images = images_for(fused)
    with torch.no_grad():
        want = model(images)
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(images), want, atol=TRITON_ATOL, rtol=TRITON_ATOL)
        program = torch.export.export(model, (images,))
    steps = [n for n in program.graph.nodes if n.op == "call_function" and "triton_step" in str(n.target)]
    assert len(steps) == sum(block.r > 0 for block in fused.tofu_plan.blocks)
    torch.testing.assert_close(program.module()(images), want, atol=TRITON_ATOL, rtol=TRITON_ATOL)
