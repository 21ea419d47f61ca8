"""TofuMatch and TofuMerge on a GPU, without TensorRT, against tofu_edge's PyTorch reference.

The launchers the plugins call run through ``libtofu_edge_kernels.so`` on torch CUDA tensors; the reference
runs on the CPU in fp32 from the very same inputs (fp16 inputs upcast, which is exact). Indices must be equal,
ties and NaN rows included; tokens within fp32 / fp16 tolerances; sizes exactly. Outputs are poisoned before
every launch, so an element the kernel does not write fails the comparison. Shapes are those of tests/kernels
(the host-math cases and the TensorRT-engine shapes) plus batch 1 and ViT-B at batch 64.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tofu_edge.arch import split_sizes
from tofu_edge.config import StepOp
from tofu_edge.export.plugin_spec import MODE_CODES
from tofu_edge.ops import fuse_tokens, match_tokens
from tofu_edge.ops.match import cosine_scores, match_scores

pytestmark = pytest.mark.gpu


def _kernel_tests(name: str) -> ModuleType:
    """A module of tests/kernels, loaded from its file: ``tests`` is no package, and a ``tests`` package some wheel
    installs into site-packages would shadow ``import tests.kernels...`` (the GPU machine has many wheels)."""
    path = Path(__file__).resolve().parents[1] / "kernels" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tofu_kernel_tests_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_host_math = _kernel_tests("test_host_math")
_engines = _kernel_tests("test_plugins_tensorrt")
CASES, CASE_IDS = _host_math.CASES, _host_math.CASE_IDS  # (num_tokens, num_prefix, r): P = 0/1/2/5, odd/even N
random_metric, repeated_metric, random_tokens = (
    _host_math.random_metric,
    _host_math.repeated_metric,
    _host_math.random_tokens,
)
SHAPES, SHAPE_IDS, inputs_for = _engines.SHAPES, _engines.SHAPE_IDS, _engines.inputs_for

ATOL_FP32 = 1e-5
RTOL_FP32 = 1e-5
TOL_FP16 = 2e-3  # one rounding of the output to fp16 (half an ulp is 4.9e-4 relative); sums are fp32
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
MODES = list(MODE_CODES)
DEVICE = torch.device("cuda")
POISON_INDEX = -7
SLEEP_CYCLES = 20_000_000  # about 10 ms of a busy stream at 2 GHz
# (batch, num_tokens, num_prefix, r, channels) beyond tests/kernels: batch 1 (the gather fast path of the
# reference) and ViT-B's first block at batch 64.
EXTRA_SHAPES = [(1, 197, 1, 13, 384), (64, 197, 1, 16, 768)]
ALL_SHAPES = SHAPES + EXTRA_SHAPES
ALL_SHAPE_IDS = SHAPE_IDS + ["deit-s-b1", "vit-b-b64"]


def tolerance(dtype: str) -> dict:
    return {"atol": ATOL_FP32, "rtol": RTOL_FP32} if dtype == "fp32" else {"atol": TOL_FP16, "rtol": TOL_FP16}


def run_match(kernels, scores: torch.Tensor, num_tokens: int, num_prefix: int, r: int):
    """TofuMatch on the GPU into poisoned outputs; results back on the CPU as int64."""
    batch = scores.shape[0]
    order = torch.full((batch, num_tokens), POISON_INDEX, dtype=torch.int32, device=DEVICE)
    dst_slot = torch.full((batch, r), POISON_INDEX, dtype=torch.int32, device=DEVICE)
    kernels.match(scores.to(DEVICE).contiguous(), num_tokens, num_prefix, r, order=order, dst_slot=dst_slot)
    torch.cuda.synchronize()
    return order.cpu().long(), dst_slot.cpu().long()


def run_merge(kernels, x: torch.Tensor, size: torch.Tensor, order: torch.Tensor, dst_slot: torch.Tensor, mode):
    """TofuMerge on the GPU into NaN-poisoned outputs; results back on the CPU in fp32."""
    batch, num_tokens, channels = x.shape
    r = dst_slot.shape[1]
    x_out = torch.full((batch, num_tokens - r, channels), float("nan"), dtype=x.dtype, device=DEVICE)
    size_out = torch.full((batch, num_tokens - r, 1), float("nan"), dtype=x.dtype, device=DEVICE)
    kernels.merge(
        x.to(DEVICE).contiguous(),
        size.to(DEVICE).contiguous(),
        order.int().to(DEVICE).contiguous(),
        dst_slot.int().to(DEVICE).contiguous(),
        mode,
        x_out=x_out,
        size_out=size_out,
    )
    torch.cuda.synchronize()
    assert x_out.dtype == x.dtype and size_out.dtype == x.dtype
    return x_out.cpu().float(), size_out.cpu().float()


def assert_same_indices(order, dst_slot, expected) -> None:
    torch.testing.assert_close(order, expected.order, atol=0, rtol=0)
    torch.testing.assert_close(dst_slot, expected.dst_slot, atol=0, rtol=0)


# TofuMatch.


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize(("batch", "num_tokens", "num_prefix", "r", "channels"), ALL_SHAPES, ids=ALL_SHAPE_IDS)
def test_match_equals_match_scores(cuda_kernels, dtype, batch, num_tokens, num_prefix, r, channels):
    metric, _, _ = inputs_for(batch, num_tokens, channels, seed=r)  # repeated rows: exact ties
    scores = cosine_scores(metric, num_prefix).to(DTYPES[dtype])
    order, dst_slot = run_match(cuda_kernels, scores, num_tokens, num_prefix, r)
    assert_same_indices(order, dst_slot, match_scores(scores.float(), num_tokens, num_prefix, r))


@pytest.mark.parametrize("metric_kind", ["random", "repeated", "constant"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), CASES, ids=CASE_IDS)
def test_match_equals_match_tokens_on_the_host_cases(cuda_kernels, num_tokens, num_prefix, r, dtype, metric_kind):
    if metric_kind == "random":
        metric = random_metric(num_tokens, seed=num_tokens * 7 + r)
    elif metric_kind == "repeated":
        metric = repeated_metric(num_tokens, seed=num_tokens * 7 + r)
    else:
        metric = torch.ones(2, num_tokens, 6)  # every score equal
    scores = cosine_scores(metric, num_prefix).to(DTYPES[dtype])
    order, dst_slot = run_match(cuda_kernels, scores, num_tokens, num_prefix, r)
    assert_same_indices(order, dst_slot, match_scores(scores.float(), num_tokens, num_prefix, r))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize(("num_tokens", "r"), [(197, 98), (197, 13), (577, 200)])
def test_match_on_all_tied_scores_takes_the_first_tokens(cuda_kernels, dtype, num_tokens, r):
    num_prefix = 1
    num_a, num_b = split_sizes(num_tokens, num_prefix)
    scores = torch.full((3, num_a, num_b), 0.25, dtype=DTYPES[dtype])
    order, dst_slot = run_match(cuda_kernels, scores, num_tokens, num_prefix, r)
    assert_same_indices(order, dst_slot, match_scores(scores.float(), num_tokens, num_prefix, r))
    assert (dst_slot == num_prefix + num_a - r).all()  # every source to the first B token


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_match_treats_nan_as_never_best(cuda_kernels, dtype):
    # The kernel never picks a NaN and ranks a row of NaNs last: match_scores with NaN read as -inf.
    num_tokens, num_prefix, r = 197, 1, 16
    scores = cosine_scores(random_metric(num_tokens, seed=4), num_prefix).to(DTYPES[dtype])
    scores[0, 5, :] = float("nan")  # a whole row
    scores[0, 9, ::3] = float("nan")  # part of a row
    scores[1, :, 2] = float("nan")  # a whole column
    order, dst_slot = run_match(cuda_kernels, scores, num_tokens, num_prefix, r)
    as_minus_inf = torch.where(scores.isnan(), float("-inf"), scores.float())
    assert_same_indices(order, dst_slot, match_scores(as_minus_inf, num_tokens, num_prefix, r))
    for b in range(scores.shape[0]):
        assert sorted(order[b].tolist()) == list(range(num_tokens))


# TofuMerge.


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize(("batch", "num_tokens", "num_prefix", "r", "channels"), ALL_SHAPES, ids=ALL_SHAPE_IDS)
def test_merge_equals_fuse_tokens(cuda_kernels, mode, dtype, batch, num_tokens, num_prefix, r, channels):
    metric, x, size = inputs_for(batch, num_tokens, channels, seed=num_tokens)  # shared destinations
    x, size = x.to(DTYPES[dtype]), size.to(DTYPES[dtype])
    match = match_tokens(metric, num_prefix, r)
    x_out, size_out = run_merge(cuda_kernels, x, size, match.order, match.dst_slot, mode)
    expected_x, expected_size = fuse_tokens(x.float(), size.float(), match, mode)  # fp32 math on the same inputs
    torch.testing.assert_close(x_out, expected_x, **tolerance(dtype))
    torch.testing.assert_close(size_out, expected_size, atol=0, rtol=0)


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), CASES, ids=CASE_IDS)
def test_merge_equals_fuse_tokens_on_the_host_cases(cuda_kernels, num_tokens, num_prefix, r, dtype, mode):
    x, size = random_tokens(num_tokens, seed=r)
    x, size = x.to(DTYPES[dtype]), size.to(DTYPES[dtype])
    match = match_tokens(repeated_metric(num_tokens, seed=num_tokens + r), num_prefix, r)
    x_out, size_out = run_merge(cuda_kernels, x, size, match.order, match.dst_slot, mode)
    expected_x, expected_size = fuse_tokens(x.float(), size.float(), match, mode)
    torch.testing.assert_close(x_out, expected_x, **tolerance(dtype))
    torch.testing.assert_close(size_out, expected_size, atol=0, rtol=0)


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_merge_copies_every_group_of_one_bit_for_bit(cuda_kernels, mode):
    num_tokens, num_prefix, r = 197, 1, 13
    x, size = random_tokens(num_tokens, seed=5, channels=384)
    match = match_tokens(random_metric(num_tokens, seed=5), num_prefix, r)
    x_out, size_out = run_merge(cuda_kernels, x, size, match.order, match.dst_slot, mode)
    kept = torch.gather(x, 1, match.order[:, : num_tokens - r, None].expand(-1, -1, x.shape[-1]))
    for b in range(x.shape[0]):
        single = [s for s in range(num_tokens - r) if mode is StepOp.PRUNE or s not in match.dst_slot[b].tolist()]
        assert torch.equal(x_out[b, single], kept[b, single])


# Both, chained on the device, and inside CUDA graphs and side streams (as the GPU kit times them).


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_match_then_merge_equals_the_pytorch_step(cuda_kernels, mode, dtype):
    batch, num_tokens, num_prefix, r, channels = 4, 197, 1, 16, 384
    metric, x, size = inputs_for(batch, num_tokens, channels, seed=7)
    scores = cosine_scores(metric, num_prefix).to(DTYPES[dtype]).to(DEVICE)
    x, size = x.to(DTYPES[dtype]), size.to(DTYPES[dtype])
    order, dst_slot = cuda_kernels.match(scores, num_tokens, num_prefix, r)
    x_out, size_out = cuda_kernels.merge(x.to(DEVICE), size.to(DEVICE), order, dst_slot, mode)
    expected = match_scores(scores.float().cpu(), num_tokens, num_prefix, r)
    expected_x, expected_size = fuse_tokens(x.float(), size.float(), expected, mode)
    torch.testing.assert_close(x_out.cpu().float(), expected_x, **tolerance(dtype))
    torch.testing.assert_close(size_out.cpu().float(), expected_size, atol=0, rtol=0)


def test_kernels_replay_in_a_cuda_graph_with_new_inputs(cuda_kernels):
    batch, num_tokens, num_prefix, r, channels = 8, 197, 1, 13, 384
    static_scores = torch.zeros(batch, 98, 98, dtype=torch.float16, device=DEVICE)
    static_x = torch.zeros(batch, num_tokens, channels, dtype=torch.float16, device=DEVICE)
    static_size = torch.ones(batch, num_tokens, 1, dtype=torch.float16, device=DEVICE)

    def step():
        order, dst_slot = cuda_kernels.match(static_scores, num_tokens, num_prefix, r)
        return cuda_kernels.merge(static_x, static_size, order, dst_slot, StepOp.MLERP)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        x_out, size_out = step()
    for seed in (1, 2):
        metric, x, size = inputs_for(batch, num_tokens, channels, seed=seed)
        scores = cosine_scores(metric, num_prefix).half()
        static_scores.copy_(scores)
        static_x.copy_(x.half())
        static_size.copy_(size.half())
        graph.replay()
        torch.cuda.synchronize()
        expected = match_scores(scores.float(), num_tokens, num_prefix, r)
        expected_x, expected_size = fuse_tokens(x.half().float(), size, expected, StepOp.MLERP)
        torch.testing.assert_close(x_out.cpu().float(), expected_x, **tolerance("fp16"))
        torch.testing.assert_close(size_out.cpu().float(), expected_size, atol=0, rtol=0)


def test_kernels_run_on_torchs_current_stream(cuda_kernels):
    # The input is written on a busy side stream just before the launch: a launch on any other stream would
    # read the stale NaNs (a different plan) before the copy lands.
    num_tokens, num_prefix, r = 197, 1, 13
    scores = cosine_scores(random_metric(num_tokens, seed=8), num_prefix)
    source = scores.to(DEVICE)
    target = torch.full_like(source, float("nan"))
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(SLEEP_CYCLES)
        target.copy_(source)
        order, dst_slot = cuda_kernels.match(target, num_tokens, num_prefix, r)
    side.synchronize()
    expected = match_scores(scores, num_tokens, num_prefix, r)
    assert_same_indices(order.cpu().long(), dst_slot.cpu().long(), expected)


def test_wrapper_rejects_what_the_kernels_would_misread(cuda_kernels):
    scores = torch.zeros(2, 98, 98, device=DEVICE)
    with pytest.raises(ValueError, match="r must be"):
        cuda_kernels.match(scores, 197, 1, 99)
    with pytest.raises(ValueError, match="shape"):
        cuda_kernels.match(scores[:, :97], 197, 1, 13)
    with pytest.raises(ValueError, match="CUDA"):
        cuda_kernels.match(scores.cpu(), 197, 1, 13)
    with pytest.raises(ValueError, match="contiguous"):
        cuda_kernels.match(scores.transpose(1, 2), 197, 1, 13)
    x, size = torch.zeros(2, 197, 8, device=DEVICE), torch.ones(2, 197, 1, device=DEVICE)
    order, dst_slot = cuda_kernels.match(scores, 197, 1, 13)
    with pytest.raises(ValueError, match="size must be torch.float32"):
        cuda_kernels.merge(x, size.half(), order, dst_slot, StepOp.MEAN)
    with pytest.raises(ValueError, match="mode must be"):
        cuda_kernels.merge(x, size, order, dst_slot, 3)
    with pytest.raises(ValueError, match="order must be torch.int32"):
        cuda_kernels.merge(x, size, order.long(), dst_slot, StepOp.MEAN)
