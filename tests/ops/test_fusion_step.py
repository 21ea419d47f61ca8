"""The vectorized fusion step (`match_tokens` + `fuse_tokens`) against the loop reference."""

import pytest
import torch

from tofu_edge.arch import max_reduction
from tofu_edge.config import StepOp
from tofu_edge.ops import fuse_tokens, match_tokens
from tofu_edge.ops.reference import reference_step

ATOL = 1e-5
STEP_MODES = [StepOp.PRUNE, StepOp.MEAN, StepOp.MLERP]


def vectorized(x, size, metric, num_prefix, r, mode):
    return fuse_tokens(x, size, match_tokens(metric, num_prefix, r), mode)


def reference(x, size, metric, num_prefix, r, mode):
    size = torch.ones(x.shape[:2]) if size is None else size[..., 0]
    pairs = [reference_step(x[b], size[b], metric[b], num_prefix, r, mode) for b in range(x.shape[0])]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])[..., None]


def random_inputs(batch, num_tokens, channels=8, metric_channels=6, sized=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = (
        torch.randn(batch, num_tokens, channels, generator=generator)
        * torch.rand(batch, num_tokens, 1, generator=generator)
        * 3
    )
    metric = torch.randn(batch, num_tokens, metric_channels, generator=generator)
    size = torch.randint(1, 5, (batch, num_tokens, 1), generator=generator).float() if sized else None
    return x, size, metric


@pytest.mark.parametrize("mode", STEP_MODES)
@pytest.mark.parametrize("num_prefix", [0, 1, 2, 5])
@pytest.mark.parametrize("num_tokens", [16, 17])
@pytest.mark.parametrize("r_kind", ["one", "half", "limit"])
@pytest.mark.parametrize("sized", [False, True])
def test_matches_reference(mode, num_prefix, num_tokens, r_kind, sized):
    limit = max_reduction(num_tokens, num_prefix)
    r = {"one": 1, "half": limit // 2, "limit": limit}[r_kind]
    x, size, metric = random_inputs(3, num_tokens, sized=sized, seed=num_prefix * 100 + num_tokens)
    got_x, got_size = vectorized(x, size, metric, num_prefix, r, mode)
    want_x, want_size = reference(x, size, metric, num_prefix, r, mode)
    assert got_x.shape == (3, num_tokens - r, 8)
    torch.testing.assert_close(got_x, want_x, atol=ATOL, rtol=0)
    if got_size is None:
        assert mode is StepOp.PRUNE and not sized
    else:
        torch.testing.assert_close(got_size, want_size)


def test_prefix_tokens_stay_first_and_unchanged():
    x, size, metric = random_inputs(2, 21)
    out, _ = vectorized(x, size, metric, 5, 8, StepOp.MLERP)
    assert torch.equal(out[:, :5], x[:, :5])


def test_mlerp_gives_merged_tokens_the_largest_norm_of_their_group():
    x, size, metric = random_inputs(2, 17, sized=False)
    match = match_tokens(metric, 1, 6)
    out, new_size = fuse_tokens(x, None, match, StepOp.MLERP)
    for b in range(2):
        for slot in range(out.shape[1]):
            members = [int(match.order[b, slot])] + [
                int(match.order[b, match.num_out + k]) for k in range(6) if int(match.dst_slot[b, k]) == slot
            ]
            largest = max(float(x[b, m].norm()) for m in members)
            assert float(out[b, slot].norm()) == pytest.approx(largest, rel=1e-5)
            assert int(new_size[b, slot]) == len(members)


def test_mlerp_of_two_equal_norm_tokens_is_slerp_at_half():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    x = torch.stack([b, a])[None] * 2.0  # position 0 = A, 1 = B; no prefix
    metric = x.clone()
    out, _ = vectorized(x, None, metric, 0, 1, StepOp.MLERP)
    torch.testing.assert_close(out[0, 0], torch.tensor([2.0, 2.0]) / 2**0.5 * 1.0)


def tome_weighted_average(x, size, metric, r):
    """ToMe's class-token merge (bipartite soft matching + size-weighted average), written from its paper."""
    metric = metric / metric.norm(dim=-1, keepdim=True)
    a, b = metric[:, ::2], metric[:, 1::2]
    scores = a @ b.transpose(1, 2)
    scores[:, 0, :] = -torch.inf  # the class token never merges
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
    unm_idx, src_idx = edge_idx[:, r:], edge_idx[:, :r]
    dst_idx = node_idx[..., None].gather(1, src_idx)
    unm_idx = unm_idx.sort(dim=1)[0]

    def merge(t):
        src, dst = t[:, ::2], t[:, 1::2]
        channels = t.shape[-1]
        unm = src.gather(1, unm_idx.expand(-1, -1, channels))
        src = src.gather(1, src_idx.expand(-1, -1, channels))
        dst = dst.scatter_reduce(1, dst_idx.expand(-1, -1, channels), src, reduce="sum")
        return torch.cat([unm, dst], dim=1)

    total, new_size = merge(x * size), merge(size)
    return total / new_size, new_size


@pytest.mark.parametrize("num_tokens", [17, 18])
def test_mean_mode_equals_tomes_weighted_average(num_tokens):
    x, size, metric = random_inputs(4, num_tokens, seed=7)
    got_x, got_size = vectorized(x, size, metric, 1, 5, StepOp.MEAN)
    want_x, want_size = tome_weighted_average(x, size, metric, 5)
    torch.testing.assert_close(got_x, want_x, atol=ATOL, rtol=0)
    torch.testing.assert_close(got_size, want_size)


def test_ties_pick_the_lowest_indices():
    metric = torch.ones(1, 9, 3)  # every score tied
    match = match_tokens(metric, 1, 2)
    # A = positions 2, 4, 6, 8; B = 1, 3, 5, 7. Sources: the first two A tokens, both into the first B token.
    assert match.order[0].tolist() == [0, 6, 8, 1, 3, 5, 7, 2, 4]
    assert match.dst_slot[0].tolist() == [3, 3]


def test_all_tied_scores_give_the_same_result_every_run():
    x, size, _ = random_inputs(2, 17)
    metric = torch.ones(2, 17, 6)
    first = vectorized(x, size, metric, 1, 7, StepOp.MLERP)
    for _ in range(5):
        again = vectorized(x, size, metric, 1, 7, StepOp.MLERP)
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    torch.testing.assert_close(first[0], reference(x, size, metric, 1, 7, StepOp.MLERP)[0], atol=ATOL, rtol=0)
