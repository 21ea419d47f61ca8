"""The Triton fusion step (`tofu_edge.ops.triton_step`) on CPU tensors, in Triton's interpreter, against torch.

tests/conftest.py turns the interpreter on where torch sees no GPU (tests/gpu/test_triton_step_cuda.py runs the
compiled kernels). Indices must equal `match_scores` on the very scores the step ranks (ties, all-tied rows and NaN
included), tokens be within fp32 / fp16 / bf16 tolerances of `fuse_tokens` in fp32, sizes exact, groups of one
copied bit for bit. Outputs are allocated poisoned, so an element no program stores fails. Shapes stay tiny: the
interpreter runs every program in Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tofu_edge.arch import max_reduction, split_sizes
from tofu_edge.config import StepOp
from tofu_edge.ops import TokenMatch, fuse_tokens, match_tokens
from tofu_edge.ops import triton_step as module
from tofu_edge.ops.match import cosine_scores, match_scores, split_starts
from tofu_edge.ops.triton_step import triton_available, triton_match, triton_merge, triton_scores, triton_step

pytestmark = pytest.mark.skipif(
    not triton_available("cpu"), reason="needs triton and its interpreter (TRITON_INTERPRET=1, tests/conftest.py)"
)

OPS = list(StepOp)
TOLERANCES = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),  # one rounding to fp16 (half an ulp: 4.9e-4 relative); sums in fp32
    # Triton's interpreter casts fp32 to bf16 by truncation (a GPU rounds to nearest): one ulp, 2**-7 = 7.8e-3
    # relative, where tests/gpu/test_triton_step_cuda.py holds the compiled kernels to half of it.
    torch.bfloat16: dict(atol=1e-5, rtol=8e-3),
}


def cases() -> list[tuple[int, int, int]]:
    """(num_tokens, num_prefix, r): P = 0/1/2/5, odd and even N, r at 1, in the middle and at its limit |A|."""
    out = []
    for num_prefix in (0, 1, 2, 5):
        for num_tokens in (num_prefix + 11, num_prefix + 12):
            limit = max_reduction(num_tokens, num_prefix)
            out += [(num_tokens, num_prefix, r) for r in sorted({1, limit // 2, limit})]
    return out


CASES = cases()
CASE_IDS = [f"N{n}-P{p}-r{r}" for n, p, r in CASES]


def metric_of(kind: str, batch: int, num_tokens: int, seed: int, channels: int = 6) -> torch.Tensor:
    """Random rows, rows drawn from 3 vectors (exact ties within and across rows), or one constant row (all tied)."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randn(batch, num_tokens, channels, generator=generator)
    if kind == "repeated":
        vectors = torch.randn(3, channels, generator=generator)
        return vectors[torch.randint(3, (batch, num_tokens), generator=generator)]
    return torch.ones(batch, num_tokens, channels)


def tokens_of(batch: int, num_tokens: int, seed: int, channels: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of very different norms (MLERP's maximum matters) and integer sizes, as after earlier steps."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, num_tokens, channels, generator=generator)
    x = x * torch.rand(batch, num_tokens, 1, generator=generator) * 3
    return x, torch.randint(1, 5, (batch, num_tokens, 1), generator=generator).float()


def plan_of(order: torch.Tensor, dst_slot: torch.Tensor, num_tokens: int, num_prefix: int) -> TokenMatch:
    """The match of a plan in the contract's form, destinations the |B| last kept slots."""
    return TokenMatch.from_order(order, dst_slot, dst_slot.shape[1], num_dst=split_sizes(num_tokens, num_prefix)[1])


def assert_plan(order: torch.Tensor, dst_slot: torch.Tensor, expected: TokenMatch) -> None:
    assert order.dtype == dst_slot.dtype == torch.int64
    torch.testing.assert_close(order, expected.order, atol=0, rtol=0)
    torch.testing.assert_close(dst_slot, expected.dst_slot, atol=0, rtol=0)


def assert_tokens(got, x, size, match: TokenMatch, op: StepOp) -> None:
    """``got`` (tokens, sizes) against `fuse_tokens` in fp32 on the same (upcast) inputs; sizes exactly."""
    x_out, size_out = got
    ones = torch.ones_like(x[..., :1])
    expected_x, _ = fuse_tokens(x.float(), None if size is None else size.float(), match, op)
    _, expected_size = fuse_tokens(x.float(), (ones if size is None else size).float(), match, StepOp.MEAN)
    assert x_out.dtype == x.dtype and size_out.dtype == (x if size is None else size).dtype
    torch.testing.assert_close(x_out.float(), expected_x, **TOLERANCES[x.dtype])
    if op is StepOp.PRUNE:  # the kept tokens' own sizes
        expected_size = (ones if size is None else size).float().gather(1, match.order[:, : size_out.shape[1], None])
    torch.testing.assert_close(size_out.float(), expected_size, atol=0, rtol=0)


# The match.


@pytest.mark.parametrize("kind", ["random", "repeated", "constant"])
@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), CASES, ids=CASE_IDS)
def test_match_equals_match_scores(poisoned, num_tokens, num_prefix, r, kind):
    scores = cosine_scores(metric_of(kind, 2, num_tokens, seed=num_tokens * 7 + r), num_prefix)
    assert_plan(*triton_match(scores, num_tokens, num_prefix, r), match_scores(scores, num_tokens, num_prefix, r))


@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), [(17, 1, 8), (16, 2, 1), (12, 0, 3)])
def test_all_tied_scores_take_the_first_tokens_to_the_first_partner(num_tokens, num_prefix, r):
    num_a, num_b = split_sizes(num_tokens, num_prefix)
    a_start, b_start = split_starts(num_prefix)
    order, dst_slot = triton_match(torch.full((2, num_a, num_b), 0.5), num_tokens, num_prefix, r)
    a_positions = list(range(a_start, num_tokens, 2))
    expected = list(range(num_prefix)) + a_positions[r:] + list(range(b_start, num_tokens, 2)) + a_positions[:r]
    assert order.tolist() == [expected] * 2
    assert dst_slot.tolist() == [[num_prefix + num_a - r] * r] * 2


@pytest.mark.parametrize("r", [1, 4, 8])
def test_match_of_nan_scores_equals_torch(poisoned, r):
    # torch's max returns a row's first NaN; its stable descending sort puts NaNs first, among them by index.
    num_tokens, num_prefix = 17, 1
    scores = cosine_scores(metric_of("repeated", 3, num_tokens, seed=3), num_prefix)
    scores[0, 2, :] = float("nan")  # a row of NaNs
    scores[0, 5, 3] = scores[0, 6, 1] = float("nan")  # single NaNs: these rows rank first, to their NaN's column
    scores[1, :, 3] = float("nan")  # every row's best is a NaN: all tied, each to column 3
    scores[2, 1:4, :] = float("-inf")  # no NaN, rows of -inf: they rank last, to column 0
    scores[2, 7, 2] = float("inf")
    expected = match_scores(scores, num_tokens, num_prefix, r)
    assert_plan(*triton_match(scores, num_tokens, num_prefix, r), expected)
    assert 6 in expected.src[0].tolist()  # A token 2 (position 6), all NaN, is a source: the test exercises NaN


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), [(17, 1, 4), (18, 2, 8), (16, 5, 5)])
def test_half_scores_match_with_their_own_ties(poisoned, num_tokens, num_prefix, r, dtype):
    metric = metric_of("repeated", 2, num_tokens, seed=r) + 0.01 * metric_of("random", 2, num_tokens, seed=r)
    scores = cosine_scores(metric, num_prefix).to(dtype)  # rounding makes many exact ties
    assert_plan(*triton_match(scores, num_tokens, num_prefix, r), match_scores(scores, num_tokens, num_prefix, r))


def test_scores_are_cosine_scores_up_to_rounding():
    metric = metric_of("random", 2, 17, seed=1)
    metric[0, 4] = 0.0  # a zero row: its norm is clamped, its scores are 0
    for dtype, tolerance in [(torch.float32, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)]:
        scores = triton_scores(metric.to(dtype), 1)
        assert scores.dtype == dtype and scores.shape == (2, 8, 8)
        torch.testing.assert_close(scores.float(), cosine_scores(metric, 1), atol=tolerance, rtol=0)


# The whole step.


# Each case with one op, the ops taking turns so that each meets every prefix count, parity of N and kind of r.
STEP_CASES = [(*case, OPS[(i + i // 3) % 3]) for i, case in enumerate(CASES)]
STEP_IDS = [f"{case_id}-{case[3]}" for case_id, case in zip(CASE_IDS, STEP_CASES, strict=True)]


@pytest.mark.parametrize(("num_tokens", "num_prefix", "r", "op"), STEP_CASES, ids=STEP_IDS)
def test_step_equals_match_tokens_and_fuse_tokens(poisoned, num_tokens, num_prefix, r, op):
    kind = "repeated" if r % 2 else "random"  # shared destinations and ties, or none
    metric = metric_of(kind, 2, num_tokens, seed=num_tokens + r)
    x, size = tokens_of(2, num_tokens, seed=r)
    size = size if num_tokens % 2 else None
    x_out, size_out, order, dst_slot = triton_step(x, size, metric, num_prefix, r, op)
    expected = match_scores(triton_scores(metric, num_prefix), num_tokens, num_prefix, r)  # the very scores ranked
    assert_plan(order, dst_slot, expected)
    if kind == "random":  # torch's own scores rank alike where no two best scores are within a rounding
        assert_plan(order, dst_slot, match_tokens(metric, num_prefix, r))
    assert_tokens((x_out, size_out), x, size, plan_of(order, dst_slot, num_tokens, num_prefix), op)


@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("op", OPS, ids=str)
def test_step_over_batches(poisoned, batch, op):
    num_tokens, num_prefix, r = 17, 1, 6
    metric = metric_of("repeated", batch, num_tokens, seed=batch)
    x, size = tokens_of(batch, num_tokens, seed=batch)
    x_out, size_out, order, dst_slot = triton_step(x, size, metric, num_prefix, r, op)
    assert_plan(order, dst_slot, match_scores(triton_scores(metric, num_prefix), num_tokens, num_prefix, r))
    assert_tokens((x_out, size_out), x, size, plan_of(order, dst_slot, num_tokens, num_prefix), op)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op", OPS, ids=str)
def test_half_step_within_one_rounding_of_fp32(poisoned, dtype, op):
    num_tokens, num_prefix, r = 18, 2, 7
    metric = metric_of("random", 2, num_tokens, seed=5).to(dtype)
    x, size = tokens_of(2, num_tokens, seed=5)
    x, size = x.to(dtype), size.to(dtype)
    x_out, size_out, order, dst_slot = triton_step(x, size, metric, num_prefix, r, op)
    assert_plan(order, dst_slot, match_scores(triton_scores(metric, num_prefix), num_tokens, num_prefix, r))
    assert_tokens((x_out, size_out), x, size, plan_of(order, dst_slot, num_tokens, num_prefix), op)


def test_nan_metric_row_ranks_as_torch_ranks_its_scores(poisoned):
    num_tokens, num_prefix, r = 16, 2, 3
    metric = metric_of("random", 2, num_tokens, seed=8)
    metric[0, 6, 2] = float("nan")  # A token 2: every score NaN, so it is a source (first NaN: column 0)
    metric[1, 5, 0] = float("nan")  # B token 1: a NaN in every row, so every A row's best
    x, size = tokens_of(2, num_tokens, seed=8)
    x_out, size_out, order, dst_slot = triton_step(x, size, metric, num_prefix, r, StepOp.MEAN)
    scores = triton_scores(metric, num_prefix)
    assert scores[0, 2].isnan().all() and scores[1, :, 1].isnan().all()
    assert_plan(order, dst_slot, match_scores(scores, num_tokens, num_prefix, r))
    assert 6 in order[0, -r:].tolist()


def test_every_chunk_loop_at_tiny_blocks(poisoned, monkeypatch):
    # Blocks of 2 to 4 elements: rows, partners, channels and sources all take several iterations.
    monkeypatch.setattr(module, "_LIMITS", {"rows": 4, "partners": 2, "metric_channels": 4, "channels": 4, "tile": 8})
    num_tokens, num_prefix, r = 15, 1, 6
    metric = metric_of("repeated", 2, num_tokens, seed=4, channels=9)
    x, size = tokens_of(2, num_tokens, seed=4, channels=11)
    for op in OPS:
        x_out, size_out, order, dst_slot = triton_step(x, size, metric, num_prefix, r, op)
        assert_plan(order, dst_slot, match_scores(triton_scores(metric, num_prefix), num_tokens, num_prefix, r))
        assert_tokens((x_out, size_out), x, size, plan_of(order, dst_slot, num_tokens, num_prefix), op)
    torch.testing.assert_close(triton_scores(metric, num_prefix), cosine_scores(metric, num_prefix))


@pytest.mark.parametrize("op", OPS, ids=str)
def test_groups_of_one_are_copied_bit_for_bit(op):
    num_tokens, num_prefix, r = 22, 2, 6
    x, size = tokens_of(2, num_tokens, seed=5)
    x[:, :, 0] = torch.tensor(float("nan")).view(torch.int32).add(5).view(torch.float32)  # a NaN payload too
    x[:, :, 1] = -0.0  # an arithmetic copy (x + 0) would make it +0.0
    x_out, size_out, order, dst_slot = triton_step(x, size, metric_of("random", 2, num_tokens, 5), num_prefix, r, op)
    copied = 0
    for b in range(2):
        for slot in range(num_tokens - r):
            if op is StepOp.PRUNE or slot not in dst_slot[b]:
                assert x_out[b, slot].view(torch.int32).tolist() == x[b, order[b, slot]].view(torch.int32).tolist()
                assert size_out[b, slot] == size[b, order[b, slot]]
                copied += 1
    assert copied >= 2 * (num_tokens - 2 * r)


def test_mlerp_of_opposite_tokens_clamps_the_zero_average():
    x = torch.tensor([[[1.0, 2.0], [-1.0, -2.0]]])
    x_out, size_out = triton_merge(x, None, torch.tensor([[1, 0]]), torch.tensor([[0]], dtype=torch.int32), "mlerp")
    assert x_out.tolist() == [[[0.0, 0.0]]] and size_out.tolist() == [[[2.0]]]


def test_merge_of_a_plan_in_the_plugin_form_lets_any_kept_slot_absorb(poisoned):
    num_tokens, r = 9, 3
    x, size = tokens_of(2, num_tokens, seed=2)
    order = torch.tensor([[4, 0, 1, 2, 3, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1, 0]])
    dst_slot = torch.tensor([[0, 0, 5], [2, 1, 2]], dtype=torch.int32)
    match = TokenMatch.from_order(order, dst_slot.long(), r, num_dst=num_tokens - r)
    for op in OPS:
        assert_tokens(triton_merge(x, size, order.int(), dst_slot, op), x, size, match, op)


# The ops: registration, tracing, availability and errors.


def test_opcheck_passes_for_every_op():
    num_tokens, num_prefix, r = 9, 1, 2
    metric = metric_of("random", 2, num_tokens, seed=0)
    x, size = tokens_of(2, num_tokens, seed=0)
    order, dst_slot = triton_match(cosine_scores(metric, num_prefix), num_tokens, num_prefix, r)
    ops = torch.ops.tofu_edge
    torch.library.opcheck(ops.triton_scores, (metric, num_prefix))
    torch.library.opcheck(ops.triton_match, (cosine_scores(metric, num_prefix), num_tokens, num_prefix, r))
    torch.library.opcheck(ops.triton_merge, (x, None, order, dst_slot, 0, 2))
    torch.library.opcheck(ops.triton_step, (x.half(), size, metric.half(), num_prefix, r, 1))


def test_compiles_with_no_graph_break():
    def step(x, metric):
        x_out, size_out, order, _ = triton_step(x * 2, None, metric, 1, 4, StepOp.MLERP)
        return x_out + 1, size_out, order

    x, _ = tokens_of(2, 17, seed=1)
    metric = metric_of("random", 2, 17, seed=1)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")  # fullgraph: a graph break is an error
    for got, expected in zip(compiled(x, metric), step(x, metric), strict=True):
        torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_export_keeps_the_op_as_one_node():
    class Step(torch.nn.Module):
        def forward(self, x, size, metric):
            return triton_step(x, size, metric, 1, 4, StepOp.MEAN)[:2]

    x, size = tokens_of(2, 17, seed=2)
    metric = metric_of("random", 2, 17, seed=2)
    exported = torch.export.export(Step(), (x, size, metric))
    targets = [node.target for node in exported.graph.nodes if node.op == "call_function"]
    assert torch.ops.tofu_edge.triton_step.default in targets
    for got, expected in zip(exported.module()(x, size, metric), Step()(x, size, metric), strict=True):
        torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_availability_here():
    assert triton_available("cpu") and triton_available(torch.device("cpu"))
    assert not triton_available("meta")
    assert not triton_available("cuda")  # interpreted kernels never count for CUDA, where they would copy to the host


def test_without_triton_nothing_is_available_and_the_step_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)
    monkeypatch.setitem(sys.modules, "tofu_edge.ops.triton_kernels", None)
    assert not triton_available("cpu") and not triton_available("cuda")
    with pytest.raises(RuntimeError, match="needs triton"):
        triton_step(*tokens_of(1, 9, seed=0), metric_of("random", 1, 9, seed=0), 1, 2, StepOp.MEAN)


# A process without the interpreter: what it says of CPU tensors, and the kernels compiled (not run) for Hopper, as
# the interpreter does not check what the compiler does (e.g. that kernels read only constexpr globals).
COMPILED_PROCESS = """
import json, sys, inspect, torch
from tofu_edge.ops.triton_step import triton_available, triton_step
report = {"lazy": "triton" not in sys.modules, "cpu": triton_available("cpu")}
try:
    triton_step(torch.ones(1, 9, 4), None, torch.randn(1, 9, 3), 1, 2, "mean")
except RuntimeError as error:
    report["error"] = str(error)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from tofu_edge.ops import triton_kernels as k
pointers = {"best": "*fp32", "best_dst": "*i32", "order": "*i64", "dst_slot": "*i64"}
pointers.update({n: "*bf16" for n in ("unit_a", "unit_b", "metric", "scores", "x", "size", "x_out", "size_out")})
for kernel, constants in [
    (k.unit_rows_kernel, {"BLOCK_T": 32, "BLOCK_C": 64}),
    (k.match_kernel, {"BLOCK_A": 128, "BLOCK_B": 64}),
    (k.merge_kernel, {"MODE": 2, "HAS_SIZE": True, "BLOCK_R": 8, "BLOCK_C": 512}),
    (k.merge_kernel, {"MODE": 0, "HAS_SIZE": False, "BLOCK_R": 8, "BLOCK_C": 512}),
]:
    params = inspect.signature(kernel.fn).parameters
    signature = {n: "constexpr" if n in constants else pointers.get(n, "i32") for n in params}
    source = ASTSource(fn=kernel, signature=signature, constexprs=constants)
    ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8}).asm["ptx"]
    report.setdefault("compiled", []).append([kernel.fn.__name__, ".local" in ptx])
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def compiled_process() -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, "-c", COMPILED_PROCESS], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_without_the_interpreter_cpu_tensors_are_refused_and_triton_is_imported_lazily(compiled_process):
    assert compiled_process["lazy"], "importing tofu_edge.ops.triton_step imported triton"
    assert not compiled_process["cpu"]
    assert "only in Triton's interpreter: set TRITON_INTERPRET=1" in compiled_process["error"]


def test_kernels_compile_for_hopper_without_spills(compiled_process):
    assert compiled_process["compiled"] == [
        ["unit_rows_kernel", False],
        ["match_kernel", False],
        ["merge_kernel", False],
        ["merge_kernel", False],
    ]


@pytest.mark.parametrize(
    ("num_tokens", "num_prefix", "r", "metric_tokens"),
    [(17, 1, 0, 17), (17, 1, 9, 17), (17, 16, 1, 17), (17, 1, 2, 16)],
    ids=["r0", "r-above-A", "no-B", "metric-shape"],
)
def test_impossible_steps_are_refused(num_tokens, num_prefix, r, metric_tokens):
    x, size = tokens_of(1, num_tokens, seed=0)
    with pytest.raises(ValueError, match="must"):
        triton_step(x, size, metric_of("random", 1, metric_tokens, seed=0), num_prefix, r, StepOp.MEAN)


def test_strided_views_give_what_contiguous_inputs_give():
    x, size = tokens_of(2, 14, seed=6)
    metric = metric_of("random", 2, 14, seed=6)
    x_view = x.transpose(1, 2).contiguous().transpose(1, 2)  # channels strided by N
    size_view = torch.stack([size, size], dim=-1)[..., 0]  # everything strided by 2
    metric_view = torch.stack([metric, metric], dim=-1)[..., 0]
    assert not any(t.is_contiguous() for t in (x_view, size_view, metric_view))
    got = triton_step(x_view, size_view, metric_view, 2, 5, StepOp.MLERP)
    for got_t, expected in zip(got, triton_step(x, size, metric, 2, 5, StepOp.MLERP), strict=True):
        torch.testing.assert_close(got_t, expected, atol=0, rtol=0)
