"""The Triton fusion step (`tofu_edge.ops.triton_step`) compiled for a CUDA GPU, at ViT sizes, against torch.

Indices must equal `match_scores` run by torch on the CPU on the very scores the step ranks (ties, all-tied and
NaN rows included); tokens be within fp32 / fp16 / bf16 tolerances of `fuse_tokens` in fp32 on the same inputs
(computed on the GPU, TF32 off), sizes exact, groups of one copied bit for bit. Outputs are allocated poisoned.
Then the step inside a CUDA graph, on torch's current stream, under ``torch.compile(fullgraph=True)`` (inductor)
and through a ``torch.export`` save / load round trip.
"""

from __future__ import annotations

import io

import pytest
import torch

from tofu_edge.arch import split_sizes
from tofu_edge.config import StepOp
from tofu_edge.ops import TokenMatch, fuse_tokens
from tofu_edge.ops.match import match_scores
from tofu_edge.ops.triton_step import triton_available, triton_match, triton_scores, triton_step

pytestmark = pytest.mark.gpu

DEVICE = torch.device("cuda")
OPS = list(StepOp)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TOLERANCES = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),  # one rounding to fp16 (half an ulp: 4.9e-4 relative); sums in fp32
    torch.bfloat16: dict(atol=1e-5, rtol=4e-3),  # one rounding to bf16 (half an ulp: 2**-8 = 3.9e-3 relative)
}
NUM_PREFIX = 1
METRIC_CHANNELS = 64  # keys averaged over heads: one head's width
# (num_tokens, channels): DeiT-S and ViT-B at 224 (197 tokens) and at 384 (577 tokens); r as ToMe would take it.
SHAPES = [(197, 384), (197, 768), (577, 384), (577, 768)]
R_OF = {197: 16, 577: 48}
BATCHES = [1, 8, 64, 256]
SLEEP_CYCLES = 20_000_000  # about 10 ms of a busy stream at 2 GHz


@pytest.fixture(scope="module", autouse=True)
def compiled_triton():
    """Skip unless the compiled kernels can run here; TF32 off, so the fp32 reference is fp32."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch.cuda.is_available() is False")
    if not triton_available(DEVICE):
        pytest.skip("the Triton step cannot run on this GPU (triton missing, an old GPU, or TRITON_INTERPRET=1)")
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = tf32


def inputs_for(batch: int, num_tokens: int, channels: int, seed: int, dtype=torch.float32, sized: bool = True):
    """x with rows of very different norms, integer sizes, and a metric whose rows are half random, half drawn from
    eight vectors (exact ties, shared destinations)."""
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn(batch, num_tokens, channels, generator=generator, device=DEVICE)
    x = x * torch.rand(batch, num_tokens, 1, generator=generator, device=DEVICE) * 3
    size = torch.randint(1, 5, (batch, num_tokens, 1), generator=generator, device=DEVICE).float()
    metric = torch.randn(batch, num_tokens, METRIC_CHANNELS, generator=generator, device=DEVICE)
    vectors = torch.randn(8, METRIC_CHANNELS, generator=generator, device=DEVICE)
    repeated = vectors[torch.randint(8, (batch, num_tokens), generator=generator, device=DEVICE)]
    metric = torch.where(torch.rand(batch, num_tokens, 1, generator=generator, device=DEVICE) < 0.5, repeated, metric)
    return x.to(dtype), size.to(dtype) if sized else None, metric.to(dtype)


def assert_step(result, x, size, metric, num_prefix: int, r: int, op: StepOp) -> None:
    """Indices equal torch's on the step's own scores; tokens within tolerance; sizes exact; groups of one exact."""
    x_out, size_out, order, dst_slot = result
    num_tokens = x.shape[1]
    scores = triton_scores(metric, num_prefix)  # deterministic: the very scores the step ranked
    expected = match_scores(scores.float().cpu(), num_tokens, num_prefix, r)
    torch.testing.assert_close(order.cpu(), expected.order, atol=0, rtol=0)
    torch.testing.assert_close(dst_slot.cpu(), expected.dst_slot, atol=0, rtol=0)
    match = TokenMatch.from_order(order, dst_slot, r, num_dst=split_sizes(num_tokens, num_prefix)[1])
    sizes = torch.ones_like(x[..., :1]) if size is None else size
    expected_x, _ = fuse_tokens(x.float(), None if size is None else size.float(), match, op)
    _, expected_size = fuse_tokens(x.float(), sizes.float(), match, StepOp.MEAN)
    kept_size = sizes.float().gather(1, order[:, : num_tokens - r, None])
    torch.testing.assert_close(x_out.float(), expected_x, **TOLERANCES[x.dtype])
    torch.testing.assert_close(size_out.float(), kept_size if op is StepOp.PRUNE else expected_size, atol=0, rtol=0)
    slots = torch.arange(num_tokens - r, device=DEVICE)
    single = (slots[None, :, None] != dst_slot[:, None, :]).all(-1) | (op is StepOp.PRUNE)  # [B, N - r]
    kept = x.gather(1, order[:, : num_tokens - r, None].expand(-1, -1, x.shape[-1]))
    assert torch.equal(bits(x_out[single]), bits(kept[single]))


def bits(t: torch.Tensor) -> torch.Tensor:
    """The bit patterns of a float tensor, as integers of the same width."""
    return t.view({2: torch.int16, 4: torch.int32}[t.element_size()])


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize(("num_tokens", "channels"), SHAPES, ids=[f"N{n}-C{c}" for n, c in SHAPES])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_step_equals_torch_at_vit_sizes(poisoned, dtype, num_tokens, channels, batch):
    r = R_OF[num_tokens]
    x, size, metric = inputs_for(batch, num_tokens, channels, seed=batch, dtype=DTYPES[dtype], sized=batch != 8)
    for op in OPS:
        result = triton_step(x, size, metric, NUM_PREFIX, r, op)
        assert_step(result, x, size, metric, NUM_PREFIX, r, op)


@pytest.mark.parametrize("r_kind", ["one", "limit"])
@pytest.mark.parametrize("num_tokens", [197, 577])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_step_at_the_extremes_of_r(poisoned, dtype, num_tokens, r_kind):
    r = 1 if r_kind == "one" else split_sizes(num_tokens, NUM_PREFIX)[0]
    x, size, metric = inputs_for(8, num_tokens, 384, seed=r, dtype=DTYPES[dtype])
    for op in OPS:
        assert_step(triton_step(x, size, metric, NUM_PREFIX, r, op), x, size, metric, NUM_PREFIX, r, op)


@pytest.mark.parametrize("kind", ["all-tied", "nan", "inf"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_match_equals_torch_on_ties_and_nan(poisoned, dtype, kind):
    # torch's max returns a row's first NaN; its stable descending sort puts NaNs first, among them by index.
    num_tokens, r = 577, 100
    num_a, num_b = split_sizes(num_tokens, NUM_PREFIX)
    _, _, metric = inputs_for(8, num_tokens, 8, seed=3)
    scores = triton_scores(metric, NUM_PREFIX).to(DTYPES[dtype])
    if kind == "all-tied":
        scores.fill_(0.25)
    elif kind == "nan":
        scores[0, 5, :] = float("nan")  # a whole row
        scores[0, 9, ::3] = float("nan")  # part of a row
        scores[1, :, 2] = float("nan")  # a whole column: every row's best
        scores[2, 200:, 100:] = float("nan")
    else:
        scores[0, :50, :] = float("-inf")
        scores[1, 7, 3] = float("inf")
    order, dst_slot = triton_match(scores, num_tokens, NUM_PREFIX, r)
    expected = match_scores(scores.float().cpu(), num_tokens, NUM_PREFIX, r)
    torch.testing.assert_close(order.cpu(), expected.order, atol=0, rtol=0)
    torch.testing.assert_close(dst_slot.cpu(), expected.dst_slot, atol=0, rtol=0)
    assert scores.shape == (8, num_a, num_b)


@pytest.mark.parametrize("op", OPS, ids=str)
def test_step_replays_in_a_cuda_graph_with_new_inputs(op):
    batch, num_tokens, channels, r = 8, 197, 384, 16
    static = [t.clone() for t in inputs_for(batch, num_tokens, channels, seed=0, dtype=torch.float16)]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        triton_step(*static, NUM_PREFIX, r, op)  # compiles the kernels outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = triton_step(*static, NUM_PREFIX, r, op)
    for seed in (1, 2):
        fresh = inputs_for(batch, num_tokens, channels, seed=seed, dtype=torch.float16)
        for target, source in zip(static, fresh, strict=True):
            target.copy_(source)
        graph.replay()
        eager = triton_step(*fresh, NUM_PREFIX, r, op)
        for got, expected in zip(captured, eager, strict=True):
            assert torch.equal(got, expected)  # the same kernels on the same inputs: the same bits
        assert_step(captured, *fresh, NUM_PREFIX, r, op)


def test_step_runs_on_torchs_current_stream():
    # The metric is written on a busy side stream just before the step: a launch on any other stream would read
    # the stale NaNs before the copy lands.
    x, size, metric = inputs_for(4, 197, 384, seed=5)
    target = torch.full_like(metric, float("nan"))
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(SLEEP_CYCLES)
        target.copy_(metric)
        result = triton_step(x, size, target, NUM_PREFIX, 16, StepOp.MLERP)
    side.synchronize()
    assert_step(result, x, size, metric, NUM_PREFIX, 16, StepOp.MLERP)


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_step_compiles_with_inductor_and_no_graph_break(mode):
    def block(x, size, metric):
        x_out, size_out, order, dst_slot = triton_step(x + 1, size, metric * 2, NUM_PREFIX, 16, StepOp.MLERP)
        return x_out * 2, size_out, order, dst_slot

    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, mode=mode)  # fullgraph: a graph break is an error
    for seed in (0, 1, 2):  # reduce-overhead records a CUDA graph on a later call
        inputs = inputs_for(8, 197, 384, seed=seed, dtype=torch.float16)
        got = [t.clone() for t in compiled(*inputs)]
        for got_t, expected in zip(got, block(*inputs), strict=True):
            assert torch.equal(got_t, expected)


def test_export_round_trip_keeps_the_op_and_its_results():
    class Block(torch.nn.Module):
        def forward(self, x, size, metric):
            return triton_step(x, size, metric, NUM_PREFIX, 16, StepOp.MEAN)

    inputs = inputs_for(8, 197, 384, seed=4, dtype=torch.float16)
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(Block(), inputs), buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer)
    targets = [node.target for node in loaded.graph.nodes if node.op == "call_function"]
    assert torch.ops.tofu_edge.triton_step.default in targets
    for got, expected in zip(loaded.module()(*inputs), Block()(*inputs), strict=True):
        assert torch.equal(got, expected)
