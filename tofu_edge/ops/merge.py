"""Apply a `TokenMatch`: prune, size-weighted mean (ToMe) or MLERP, with static shapes and no scatter."""

from __future__ import annotations

import torch

from tofu_edge.config import StepOp
from tofu_edge.ops.match import EPS, TokenMatch

__all__ = ["gather_tokens", "fuse_tokens", "merge_sources"]


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick rows of every batch item: ``out[b, k] = x[b, index[b, k]]``.

    A flat row gather (one ONNX Gather on axis 0) rather than GatherElements over an expanded index.

    Shapes:
        x: [B, N, C]
        index: [B, K]
        returns: [B, K, C]
    """
    batch, num_tokens, channels = x.shape
    if isinstance(batch, int) and batch == 1:  # a static batch of one needs no row offsets
        return x.index_select(1, index[0])
    offsets = torch.arange(batch, device=x.device)[:, None] * num_tokens
    rows = (index + offsets).reshape(-1)
    flat = x.reshape(batch * num_tokens, channels).index_select(0, rows)
    return flat.reshape(batch, index.shape[1], channels)


def fuse_tokens(
    x: torch.Tensor, size: torch.Tensor | None, match: TokenMatch, op: StepOp
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Remove the ``r`` matched sources of ``x``, folding them into their destinations by ``op``.

    ``prune`` drops the sources and leaves destinations and sizes as they are. ``mean`` replaces each
    destination group by its size-weighted average; ``mlerp`` by the direction of that average with the
    largest norm in the group. A group of one stays exactly as it was.

    Only destinations change, so the merged rows are computed per source (``[B, r, C]``; sources that share
    a destination compute the same row, their group found by a ``[B, r, r]`` equality matrix) and written
    into the gathered kept tokens by a scatter without reduction: identical rows land on a shared
    destination, so the write order does not matter and no reducing scatter is needed.

    Args:
        x: Tokens after the attention residual.
        size: Patches each token stands for; ``None`` means all ones.
        match: Index plan from `match_tokens`.
        op: What to do with the sources (prune, mean or MLERP).

    Returns:
        The kept tokens in ``[prefix, unm, B]`` order and their sizes (``None`` while all ones).

    Shapes:
        x: [B, N, C]
        size: [B, N, 1]
        returns: [B, N - r, C], [B, N - r, 1]
    """
    num_out = match.num_out
    keep = match.order[:, :num_out]
    if op is StepOp.PRUNE:
        return gather_tokens(x, keep), None if size is None else gather_tokens(size, keep)

    x_keep = gather_tokens(x, keep)
    x_src, x_dst = gather_tokens(x, match.order[:, num_out:]), gather_tokens(x_keep, match.dst_slot)
    same_group = (match.dst_slot[:, :, None] == match.dst_slot[:, None, :]).to(x.dtype)  # [B, r, r]
    if size is None:
        size_keep = torch.ones_like(x_keep[..., :1])
        group_size = 1.0 + same_group.sum(dim=-1, keepdim=True)
        merged = (x_dst + same_group @ x_src) / group_size
    else:
        size_keep = gather_tokens(size, keep)
        size_src, size_dst = gather_tokens(size, match.order[:, num_out:]), gather_tokens(size_keep, match.dst_slot)
        group_size = size_dst + same_group @ size_src
        merged = (size_dst * x_dst + same_group @ (size_src * x_src)) / group_size
    if op is StepOp.MLERP:
        src_norm = x_src.norm(dim=-1)  # [B, r]
        group_max = torch.maximum(x_dst.norm(dim=-1), (same_group * src_norm[:, None, :]).amax(dim=-1))
        merged = merged / merged.norm(dim=-1, keepdim=True).clamp_min(EPS) * group_max[..., None]

    # Write each group's row into its destination slot. Sources sharing a destination carry identical rows,
    # so this scatter needs no reduction (any write order gives the same result).
    slot_rows = match.dst_slot[..., None]
    new_x = x_keep.scatter(1, slot_rows.expand(-1, -1, x.shape[-1]), merged)
    return new_x, size_keep.scatter(1, slot_rows, group_size)


def merge_sources(sources: torch.Tensor, match: TokenMatch, op: StepOp) -> torch.Tensor:
    """Apply a `TokenMatch` to what each token stands for: the kept tokens' rows of ``sources``, where a merged
    source's row joins (is added to) its destination's row and a pruned source's row is dropped.

    With one-hot rows over the original patches this tracks which patches every token holds (`tofu_edge.visualize`).
    Group sums come from a one-hot assignment matmul, as in `fuse_tokens`: no scatter.

    Shapes:
        sources: [B, N, T]
        returns: [B, N - r, T]
    """
    kept = gather_tokens(sources, match.order[:, : match.num_out])
    if op is StepOp.PRUNE:
        return kept
    slots = torch.arange(match.num_out, device=sources.device)
    assign = (match.dst_slot[:, :, None] == slots).to(sources.dtype)  # [B, r, N - r]
    return kept + assign.transpose(1, 2) @ gather_tokens(sources, match.order[:, match.num_out :])
