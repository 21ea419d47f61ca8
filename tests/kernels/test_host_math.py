"""The kernels' math (run on the host by libtofu_edge_host) against tofu_edge's PyTorch ops and references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tofu_edge.arch import max_reduction, split_sizes
from tofu_edge.config import StepOp
from tofu_edge.ops import TokenMatch, fuse_tokens, match_tokens
from tofu_edge.ops.match import EPS, cosine_scores, match_scores, split_starts
from tofu_edge.ops.reference import reference_step

ATOL = 1e-5
RTOL = 1e-5
FP16_TOL = 2e-3  # output rounding to fp16 (half an ulp is 4.9e-4 relative); sums are fp32
MODES = {StepOp.PRUNE: 0, StepOp.MEAN: 1, StepOp.MLERP: 2}
BATCH = 2
PREFIXES = [0, 1, 2, 5]
PATCHES = [11, 12]  # N = P + patches: odd and even N for every prefix count


def cases() -> list[tuple[int, int, int]]:
    """(num_tokens, num_prefix, r) with r at 1, in the middle and at its limit |A|."""
    out = []
    for num_prefix in PREFIXES:
        for patches in PATCHES:
            num_tokens = num_prefix + patches
            limit = max_reduction(num_tokens, num_prefix)
            out += [(num_tokens, num_prefix, r) for r in sorted({1, limit // 2, limit})]
    return out


CASES = cases()
CASE_IDS = [f"N{n}-P{p}-r{r}" for n, p, r in CASES]


def random_metric(num_tokens: int, seed: int, channels: int = 6) -> torch.Tensor:
    return torch.randn(BATCH, num_tokens, channels, generator=torch.Generator().manual_seed(seed))


def repeated_metric(num_tokens: int, seed: int, distinct: int = 3) -> torch.Tensor:
    """Rows drawn from a few vectors: many exactly equal scores, in rows and across rows."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(distinct, 6, generator=generator)
    return vectors[torch.randint(distinct, (BATCH, num_tokens), generator=generator)]


def random_tokens(num_tokens: int, seed: int, channels: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """x with rows of very different norms (MLERP's maximum matters) and integer sizes, as after earlier steps."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, num_tokens, channels, generator=generator)
    x = x * torch.rand(BATCH, num_tokens, 1, generator=generator) * 3
    size = torch.randint(1, 5, (BATCH, num_tokens, 1), generator=generator).to(torch.float32)
    return x, size


def loop_match(scores: np.ndarray, num_tokens: int, num_prefix: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    """TofuMatch from the scores, written out from docs/design.md ("The algorithm") as loops (one batch item)."""
    a_start, b_start = split_starts(num_prefix)
    num_a, num_b = scores.shape
    best = []
    for i in range(num_a):
        j_best = 0
        for j in range(1, num_b):
            if scores[i, j] > scores[i, j_best]:  # strict: the first maximum stays
                j_best = j
        best.append((float(scores[i, j_best]), j_best))
    ranked = sorted(range(num_a), key=lambda i: (-best[i][0], i))
    sources = sorted(ranked[:r])
    unm = [i for i in range(num_a) if i not in sources]
    order = list(range(num_prefix)) + [a_start + 2 * i for i in unm] + list(range(b_start, num_tokens, 2))
    order += [a_start + 2 * i for i in sources]
    dst_slot = [num_prefix + num_a - r + best[i][1] for i in sources]
    return np.array(order, np.int32), np.array(dst_slot, np.int32)


def as_match(order: np.ndarray, dst_slot: np.ndarray, num_dst: int) -> TokenMatch:
    """The `TokenMatch` of a plan in the plugins' form, its destinations the last ``num_dst`` kept slots."""
    order_t, dst_t = torch.from_numpy(order).long(), torch.from_numpy(dst_slot).long()
    return TokenMatch.from_order(order_t, dst_t, r=dst_slot.shape[1], num_dst=num_dst)


def test_eps_is_the_reference_eps(host):
    assert host.eps() == np.float32(EPS)


@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("metric_kind", ["random", "repeated", "constant"])
def test_match_equals_match_tokens(host, num_tokens, num_prefix, r, metric_kind):
    if metric_kind == "random":
        metric = random_metric(num_tokens, seed=num_tokens * 7 + r)
    elif metric_kind == "repeated":
        metric = repeated_metric(num_tokens, seed=num_tokens * 7 + r)
    else:
        metric = torch.ones(BATCH, num_tokens, 6)
    expected = match_tokens(metric, num_prefix, r)
    # The very tensor match_tokens ranks: a bit-exact comparison, ties included.
    order, dst_slot = host.match(cosine_scores(metric, num_prefix).numpy(), num_tokens, num_prefix, r)
    np.testing.assert_array_equal(order, expected.order.numpy())
    np.testing.assert_array_equal(dst_slot, expected.dst_slot.numpy())


@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), CASES, ids=CASE_IDS)
def test_match_of_all_tied_scores_takes_the_first_tokens_to_the_first_partner(host, num_tokens, num_prefix, r):
    num_a, num_b = split_sizes(num_tokens, num_prefix)
    a_start, b_start = split_starts(num_prefix)
    scores = np.full((BATCH, num_a, num_b), 0.5, np.float32)
    order, dst_slot = host.match(scores, num_tokens, num_prefix, r)
    a_positions = list(range(a_start, num_tokens, 2))
    expected = list(range(num_prefix)) + a_positions[r:] + list(range(b_start, num_tokens, 2)) + a_positions[:r]
    np.testing.assert_array_equal(order, np.array([expected] * BATCH))
    np.testing.assert_array_equal(dst_slot, np.full((BATCH, r), num_prefix + num_a - r))
    np.testing.assert_array_equal(order, match_scores(torch.from_numpy(scores), num_tokens, num_prefix, r).order)


@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), CASES, ids=CASE_IDS)
def test_fp16_match_equals_the_loop_reference(host, num_tokens, num_prefix, r):
    # fp16 rounding makes many exact ties; the kernels compare the fp16 values themselves.
    scores = cosine_scores(repeated_metric(num_tokens, seed=r, distinct=5) + 0.3, num_prefix).numpy()
    scores16 = scores.astype(np.float16)
    order, dst_slot = host.match(scores16, num_tokens, num_prefix, r)
    for b in range(BATCH):
        expected_order, expected_dst = loop_match(scores16[b].astype(np.float32), num_tokens, num_prefix, r)
        np.testing.assert_array_equal(order[b], expected_order)
        np.testing.assert_array_equal(dst_slot[b], expected_dst)
    np.testing.assert_array_equal(order, host.match(scores16.astype(np.float32), num_tokens, num_prefix, r)[0])


def test_match_output_is_a_permutation_even_for_nan_scores(host):
    num_tokens, num_prefix, r = 17, 1, 5
    scores = cosine_scores(random_metric(num_tokens, seed=3), num_prefix).numpy()
    scores[0, 2, :] = np.nan
    scores[1, :, 3] = np.nan
    order, dst_slot = host.match(scores, num_tokens, num_prefix, r)
    for b in range(BATCH):
        assert sorted(order[b]) == list(range(num_tokens))
    assert ((dst_slot >= num_prefix) & (dst_slot < num_tokens - r)).all()


@pytest.mark.parametrize("mode", list(MODES), ids=str)
@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), CASES, ids=CASE_IDS)
def test_merge_equals_fuse_tokens(host, num_tokens, num_prefix, r, mode):
    x, size = random_tokens(num_tokens, seed=r)
    match = match_tokens(repeated_metric(num_tokens, seed=num_tokens + r), num_prefix, r)  # shared destinations
    order, dst_slot = match.order.int().numpy(), match.dst_slot.int().numpy()
    x_out, size_out = host.merge(x.numpy(), size.numpy(), order, dst_slot, MODES[mode])
    expected_x, expected_size = fuse_tokens(x, size, match, mode)
    torch.testing.assert_close(torch.from_numpy(x_out), expected_x, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(torch.from_numpy(size_out), expected_size, atol=0, rtol=0)


@pytest.mark.parametrize("mode", list(MODES), ids=str)
def test_merge_copies_every_group_of_one_bit_for_bit(host, mode):
    num_tokens, num_prefix, r = 22, 2, 6
    x, size = random_tokens(num_tokens, seed=5)
    match = match_tokens(random_metric(num_tokens, seed=5), num_prefix, r)
    order, dst_slot = match.order.int().numpy(), match.dst_slot.int().numpy()
    x_out, size_out = host.merge(x.numpy(), size.numpy(), order, dst_slot, MODES[mode])
    for b in range(BATCH):
        for slot in range(num_tokens - r):
            if mode is StepOp.PRUNE or slot not in dst_slot[b]:
                assert x_out[b, slot].tobytes() == x.numpy()[b, order[b, slot]].tobytes()
                assert size_out[b, slot, 0] == size.numpy()[b, order[b, slot], 0]


def test_mlerp_keeps_the_largest_norm_of_the_group(host):
    num_tokens, num_prefix, r = 17, 1, 8
    x, size = random_tokens(num_tokens, seed=9)
    match = match_tokens(repeated_metric(num_tokens, seed=9, distinct=2), num_prefix, r)
    order, dst_slot = match.order.int().numpy(), match.dst_slot.int().numpy()
    x_out, _ = host.merge(x.numpy(), size.numpy(), order, dst_slot, MODES[StepOp.MLERP])
    for b in range(BATCH):
        for slot in set(dst_slot[b].tolist()):
            members = [order[b, slot]] + [order[b, num_tokens - r + k] for k in np.flatnonzero(dst_slot[b] == slot)]
            largest = max(np.linalg.norm(x.numpy()[b, m]) for m in members)
            assert np.linalg.norm(x_out[b, slot]) == pytest.approx(largest, rel=1e-5)


def test_mlerp_of_opposite_tokens_clamps_the_zero_average(host):
    # Two tokens that cancel: the average is 0, its norm is clamped to eps, the result stays finite (0).
    x = np.array([[[1.0, 2.0], [-1.0, -2.0]]], np.float32)
    size = np.ones((1, 2, 1), np.float32)
    order, dst_slot = np.array([[1, 0]], np.int32), np.array([[0]], np.int32)
    x_out, size_out = host.merge(x, size, order, dst_slot, MODES[StepOp.MLERP])
    expected_x, expected_size = fuse_tokens(
        torch.from_numpy(x), torch.from_numpy(size), as_match(order, dst_slot, num_dst=1), StepOp.MLERP
    )
    np.testing.assert_array_equal(x_out, expected_x.numpy())
    np.testing.assert_array_equal(size_out, [[[2.0]]])


@pytest.mark.parametrize("mode", list(MODES), ids=str)
@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), [(17, 1, 8), (22, 5, 3), (12, 0, 6)])
def test_fp16_merge_matches_fp32_within_fp16_rounding(host, num_tokens, num_prefix, r, mode):
    x, size = random_tokens(num_tokens, seed=num_tokens)
    x16, size16 = x.half(), size.half()
    match = match_tokens(repeated_metric(num_tokens, seed=r), num_prefix, r)
    order, dst_slot = match.order.int().numpy(), match.dst_slot.int().numpy()
    x_out, size_out = host.merge(x16.numpy(), size16.numpy(), order, dst_slot, MODES[mode])
    assert x_out.dtype == np.float16
    expected_x, expected_size = fuse_tokens(x16.float(), size16.float(), match, mode)  # fp32 math on fp16 inputs
    torch.testing.assert_close(torch.from_numpy(x_out).float(), expected_x, atol=FP16_TOL, rtol=FP16_TOL)
    torch.testing.assert_close(torch.from_numpy(size_out).float(), expected_size, atol=0, rtol=0)


@pytest.mark.parametrize("mode", list(MODES), ids=str)
@pytest.mark.parametrize(("num_tokens", "num_prefix", "r"), [(17, 1, 6), (18, 2, 8), (21, 5, 8), (16, 0, 8)])
def test_match_then_merge_equals_the_loop_reference(host, num_tokens, num_prefix, r, mode):
    metric = random_metric(num_tokens, seed=11)
    x, size = random_tokens(num_tokens, seed=12)
    order, dst_slot = host.match(cosine_scores(metric, num_prefix).numpy(), num_tokens, num_prefix, r)
    x_out, size_out = host.merge(x.numpy(), size.numpy(), order, dst_slot, MODES[mode])
    for b in range(BATCH):
        expected_x, expected_size = reference_step(x[b], size[b, :, 0], metric[b], num_prefix, r, mode)
        torch.testing.assert_close(torch.from_numpy(x_out[b]), expected_x, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(torch.from_numpy(size_out[b, :, 0]), expected_size, atol=0, rtol=0)


@pytest.mark.parametrize(
    ("num_tokens", "num_prefix", "r"),
    [(17, 1, 0), (17, 1, -1), (17, 1, 9), (17, 16, 1), (1, 0, 1), (17, -1, 1), (8193, 1, 1)],
)
def test_match_rejects_impossible_attributes(host, num_tokens, num_prefix, r):
    with pytest.raises(ValueError, match="must be"):  # checked before the scores are read
        host.match(np.zeros((1, 1, 1), np.float32), num_tokens, num_prefix, r)


@pytest.mark.parametrize(
    ("r", "mode", "dst", "first"),
    [(0, 1, 0, 0), (2, 3, 0, 0), (2, -1, 0, 0), (2, 1, 15, 0), (2, 1, -1, 0), (2, 1, 0, 17), (2, 1, 0, -1)],
    ids=["r0", "mode3", "mode-1", "dst-too-high", "dst-negative", "order-too-high", "order-negative"],
)
def test_merge_rejects_bad_attributes_and_indices(host, r, mode, dst, first):
    x = np.zeros((1, 17, 4), np.float32)
    size = np.ones((1, 17, 1), np.float32)
    order = np.arange(17, dtype=np.int32)[None]
    order[0, 0] = first
    with pytest.raises(ValueError, match="must be|outside"):
        host.merge(x, size, order, np.full((1, r), dst, np.int32), mode)
