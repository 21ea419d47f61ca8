"""The Triton kernels of one fusion step: unit metric rows, the index plan, the merge (`tofu_edge.ops.triton_step`
launches them, on contiguous tensors).

Imported only through `tofu_edge.ops.triton_step`, which guards the import: this module needs triton (>= 3.6).
``triton.jit`` decides when this module is imported whether the kernels compile for a GPU or run in Triton's
interpreter (``TRITON_INTERPRET=1``, CPU tensors). Every output element is stored by exactly one program, with no
atomics, so every result is deterministic. Sums and norms are fp32 whatever the tensors' type.
"""

from __future__ import annotations

import triton
import triton.language as tl

from tofu_edge.ops.match import EPS as _EPS

__all__ = ["unit_rows_kernel", "match_kernel", "merge_kernel"]

# Kernels read only constexpr globals. The modes are numbered as in the plugin contract.
PRUNE, MEAN, MLERP = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
EPS = tl.constexpr(_EPS)


@triton.jit
def _unit_rows(metric, unit, rows, count, start, channels, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """Rows ``start + 2 * rows`` of ``metric`` over their L2 norm clamped at EPS, into rows ``rows`` of ``unit``."""
    valid = rows < count
    src = metric + (start + 2 * rows.to(tl.int64))[:, None] * channels
    squares = tl.zeros([BLOCK_T], tl.float32)
    for c0 in range(0, channels, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        v = tl.load(src + cols[None, :], mask=valid[:, None] & (cols < channels)[None, :], other=0.0).to(tl.float32)
        squares += tl.sum(v * v, axis=1)
    norm = tl.sqrt(squares)
    norm = tl.where(norm < EPS, EPS, norm)  # torch's clamp_min: a NaN norm stays NaN
    for c0 in range(0, channels, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = valid[:, None] & (cols < channels)[None, :]
        v = tl.load(src + cols[None, :], mask=mask, other=0.0).to(tl.float32) / norm[:, None]
        tl.store(unit + rows.to(tl.int64)[:, None] * channels + cols[None, :], v.to(unit.dtype.element_ty), mask=mask)


@triton.jit
def unit_rows_kernel(metric, unit_a, unit_b, num_tokens, num_a, num_b, a_start, b_start, channels,
                     BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
    """Program (t, b): A and B rows ``t * BLOCK_T ...`` of batch item ``b``, normalised, into ``unit_a``
    [B, |A|, Ck] / ``unit_b`` [B, |B|, Ck], so that the score GEMM reads two dense operands."""
    batch = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    metric += batch * num_tokens * channels
    _unit_rows(metric, unit_a + batch * num_a * channels, rows, num_a, a_start, channels, BLOCK_T, BLOCK_C)
    _unit_rows(metric, unit_b + batch * num_b * channels, rows, num_b, b_start, channels, BLOCK_T, BLOCK_C)


@triton.jit
def _best_partners(scores, best, best_dst, num_a, num_b, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):
    """Each A row's first maximum over B, in column chunks, into ``best`` / ``best_dst``. As torch's ``max``, a NaN
    beats any number and a row's first NaN wins."""
    for a0 in range(0, num_a, BLOCK_A):
        rows = a0 + tl.arange(0, BLOCK_A)
        top = tl.full([BLOCK_A], float("-inf"), tl.float32)
        top_col = tl.zeros([BLOCK_A], tl.int32)
        for j0 in range(0, num_b, BLOCK_B):
            cols = j0 + tl.arange(0, BLOCK_B)
            mask = (rows < num_a)[:, None] & (cols < num_b)[None, :]
            s = tl.load(scores + rows[:, None] * num_b + cols[None, :], mask=mask, other=float("-inf")).to(tl.float32)
            is_nan = s != s
            has_nan = tl.max(is_nan.to(tl.int32), axis=1) > 0
            high = tl.max(tl.where(is_nan, float("-inf"), s), axis=1)  # unused where a row has a NaN
            wins = tl.where(has_nan[:, None], is_nan, s == high[:, None]) & mask
            first = tl.min(tl.where(wins, cols[None, :], num_b), axis=1)
            chunk = tl.where(has_nan, float("nan"), high)
            better = (has_nan & (top == top)) | (chunk > top)  # strictly: an equal score keeps the lower column
            top = tl.where(better, chunk, top)
            top_col = tl.where(better, first, top_col)
        tl.store(best + rows, top, mask=rows < num_a)
        tl.store(best_dst + rows, top_col, mask=rows < num_a)


@triton.jit
def _rank(best, rows, num_a, BLOCK_B: tl.constexpr):
    """Rank of A tokens ``rows`` in torch's ``sort(descending=True, stable=True)`` of ``best``: the tokens ahead,
    those with a higher score (NaN above all) or an equal one (NaNs equal) and a lower index."""
    mine = tl.load(best + rows, mask=rows < num_a, other=0.0)
    rank = tl.zeros(rows.shape, tl.int32)
    for j0 in range(0, num_a, BLOCK_B):
        others = j0 + tl.arange(0, BLOCK_B)
        theirs = tl.load(best + others, mask=others < num_a, other=0.0)
        m, t = mine[:, None], theirs[None, :]
        higher = (t > m) | ((t != t) & (m == m))
        equal = (t == m) | ((t != t) & (m != m))
        ahead = (higher | (equal & (others[None, :] < rows[:, None]))) & (others < num_a)[None, :]
        rank += tl.sum(ahead.to(tl.int32), axis=1)
    return rank


@triton.jit
def match_kernel(scores, best, best_dst, order, dst_slot, num_tokens, num_prefix, num_a, num_b, a_start, b_start, r,
                 BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):  # fmt: skip
    """Program b: the whole index plan of batch item ``b`` (`tofu_edge.ops.match.match_scores`).

    The best partners go to the scratch ``best`` / ``best_dst`` ([B, |A|]); after a barrier every A token counts
    its exact rank against all others (no sort); the ``r`` first are the sources, and a running count of them gives
    each token its slot, so every element of ``order`` and ``dst_slot`` is stored exactly once.
    """
    batch = tl.program_id(0).to(tl.int64)
    best += batch * num_a
    best_dst += batch * num_a
    order += batch * num_tokens
    dst_slot += batch * r
    _best_partners(scores + batch * num_a * num_b, best, best_dst, num_a, num_b, BLOCK_A, BLOCK_B)
    tl.debug_barrier()  # the stores above are read below by other threads of the program

    first_b_slot = num_prefix + num_a - r
    for p0 in range(0, num_prefix, BLOCK_A):
        positions = p0 + tl.arange(0, BLOCK_A)
        tl.store(order + positions, positions.to(tl.int64), mask=positions < num_prefix)
    for j0 in range(0, num_b, BLOCK_A):
        cols = j0 + tl.arange(0, BLOCK_A)
        tl.store(order + first_b_slot + cols, (b_start + 2 * cols).to(tl.int64), mask=cols < num_b)
    sources_before = tl.full([], 0, tl.int32)  # among the A tokens of the blocks done
    for a0 in range(0, num_a, BLOCK_A):
        rows = a0 + tl.arange(0, BLOCK_A)
        is_source = ((_rank(best, rows, num_a, BLOCK_B) < r) & (rows < num_a)).to(tl.int32)
        source_index = sources_before + tl.cumsum(is_source, axis=0) - is_source  # sources by ascending index
        sources_before += tl.sum(is_source, axis=0)
        slot = tl.where(is_source != 0, num_tokens - r + source_index, num_prefix + rows - source_index)
        tl.store(order + slot, (a_start + 2 * rows).to(tl.int64), mask=rows < num_a)
        partner = tl.load(best_dst + rows, mask=rows < num_a, other=0)
        tl.store(dst_slot + source_index, (first_b_slot + partner).to(tl.int64), mask=is_source != 0)


@triton.jit
def _sources(tokens, dst_slot, size, k0, slot, r, HAS_SIZE: tl.constexpr, BLOCK_R: tl.constexpr):
    """Sources ``k0 ... k0 + BLOCK_R`` that ``slot`` absorbs: the mask, their tokens and sizes (0 for the others)."""
    ks = k0 + tl.arange(0, BLOCK_R)
    member = (tl.load(dst_slot + ks, mask=ks < r, other=-1) == slot) & (ks < r)
    token = tl.load(tokens + ks, mask=member, other=0).to(tl.int64)
    if HAS_SIZE:
        weight = tl.load(size + token, mask=member, other=0.0).to(tl.float32)
    else:
        weight = member.to(tl.float32)
    return member, token, weight


@triton.jit
def _group_sum(x, x_dst, cols, tokens, dst_slot, size, size_dst, slot, r, channels, HAS_SIZE: tl.constexpr,
               BLOCK_R: tl.constexpr):  # fmt: skip
    """Channels ``cols`` of the destination plus its sources weighted by their size over the destination's, as
    `fuse_tokens` sums them."""
    total = tl.load(x_dst + cols, mask=cols < channels, other=0.0).to(tl.float32)
    for k0 in range(0, r, BLOCK_R):
        member, token, weight = _sources(tokens, dst_slot, size, k0, slot, r, HAS_SIZE, BLOCK_R)
        mask = member[:, None] & (cols < channels)[None, :]
        v = tl.load(x + token[:, None] * channels + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        total += tl.sum(v * (weight / size_dst)[:, None], axis=0)
    return total


@triton.jit
def _largest_square(x, x_dst, tokens, dst_slot, slot, r, channels, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """The largest squared L2 norm in the group (sqrt is monotonic: the largest norm's square)."""
    squares = tl.zeros([BLOCK_C], tl.float32)
    for c0 in range(0, channels, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        v = tl.load(x_dst + cols, mask=cols < channels, other=0.0).to(tl.float32)
        squares += v * v
    largest = tl.sum(squares, axis=0)
    for k0 in range(0, r, BLOCK_R):
        member, token, _ = _sources(tokens, dst_slot, dst_slot, k0, slot, r, False, BLOCK_R)
        row_squares = tl.zeros([BLOCK_R], tl.float32)
        for c0 in range(0, channels, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            mask = member[:, None] & (cols < channels)[None, :]
            v = tl.load(x + token[:, None] * channels + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            row_squares += tl.sum(v * v, axis=1)
        largest = tl.maximum(largest, tl.max(row_squares, axis=0))
    return largest


@triton.jit
def merge_kernel(x, size, order, dst_slot, x_out, size_out, num_tokens, first_dst, r, channels, MODE: tl.constexpr,
                 HAS_SIZE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
    """Program (o, b): output slot ``o`` of batch item ``b`` (`tofu_edge.ops.merge.fuse_tokens`).

    The slot starts from token ``order[o]``; the sources ``k`` with ``dst_slot[k] == o`` join it (slots below
    ``first_dst`` have none). A slot that absorbs nothing (every slot when pruning) is copied bit for bit; otherwise
    mean scales the size-weighted group sum by the destination's size over the group's, MLERP by the group's
    largest norm over the sum's. Channels are looped over in blocks, so any C works; MLERP reads the group three
    times (norms, the sum's norm, the output) rather than holding it.
    """
    slot = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    num_out = num_tokens - r
    x += batch * num_tokens * channels
    size += batch * num_tokens
    order += batch * num_tokens
    dst_slot += batch * r
    tokens = order + num_out  # the sources' tokens
    token = tl.load(order + slot).to(tl.int64)
    x_dst = x + token * channels
    out_row = x_out + (batch * num_out + slot) * channels
    if HAS_SIZE:
        size_dst = tl.load(size + token).to(tl.float32)
    else:
        size_dst = tl.full([], 1.0, tl.float32)
    group_size = size_dst
    members = tl.full([], 0, tl.int32)
    if MODE != PRUNE:
        if slot >= first_dst:
            for k0 in range(0, r, BLOCK_R):
                member, _, weight = _sources(tokens, dst_slot, size, k0, slot, r, HAS_SIZE, BLOCK_R)
                members += tl.sum(member.to(tl.int32), axis=0)
                group_size += tl.sum(weight, axis=0)
    if members == 0:  # a group of one: the very bits, whatever the mode
        for c0 in range(0, channels, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            tl.store(out_row + cols, tl.load(x_dst + cols, mask=cols < channels), mask=cols < channels)
    else:
        if MODE == MLERP:
            summed_sq = tl.full([], 0.0, tl.float32)
            for c0 in range(0, channels, BLOCK_C):
                cols = c0 + tl.arange(0, BLOCK_C)
                summed = _group_sum(x, x_dst, cols, tokens, dst_slot, size, size_dst, slot, r, channels, HAS_SIZE,
                                    BLOCK_R)  # fmt: skip
                summed_sq += tl.sum(summed * summed, axis=0)
            largest = tl.sqrt(_largest_square(x, x_dst, tokens, dst_slot, slot, r, channels, BLOCK_R, BLOCK_C))
            scale = largest / tl.maximum(tl.sqrt(summed_sq), EPS)
        else:
            scale = size_dst / group_size
        for c0 in range(0, channels, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            summed = _group_sum(x, x_dst, cols, tokens, dst_slot, size, size_dst, slot, r, channels, HAS_SIZE, BLOCK_R)
            tl.store(out_row + cols, (summed * scale).to(x_out.dtype.element_ty), mask=cols < channels)
    tl.store(size_out + batch * num_out + slot, group_size.to(size_out.dtype.element_ty))
