"""Apply a `TokenMatch`: prune, size-weighted mean (ToMe) or MLERP, with static shapes and no scatter."""

from __future__ import annotations

import torch

from tofu_edge.config import Mode
from tofu_edge.ops.match import EPS, TokenMatch

__all__ = ["gather_tokens", "fuse_tokens"]


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
        return x[0].index_select(0, index[0])[None]
    offsets = torch.arange(batch, device=x.device)[:, None] * num_tokens
    rows = (index + offsets).reshape(-1)
    flat = x.reshape(batch * num_tokens, channels).index_select(0, rows)
    return flat.reshape(batch, index.shape[1], channels)


def fuse_tokens(
    x: torch.Tensor, size: torch.Tensor | None, match: TokenMatch, mode: Mode
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Remove the ``r`` matched sources of ``x``, folding them into their destinations by ``mode``.

    ``prune`` drops the sources and leaves destinations and sizes as they are. ``mean`` replaces each
    destination group by its size-weighted average; ``mlerp`` by the direction of that average with the
    largest norm in the group. A group of one stays exactly as it was.

    Only destinations change, so the merged rows are computed per source (``[B, r, C]``; sources that share
    a destination compute the same row, their group found by a ``[B, r, r]`` equality matrix, not a
    scatter) and one gather over ``[x, merged]`` builds the output. The full-size tensors are touched twice.

    Args:
        x: Tokens after the attention residual.
        size: Patches each token stands for; ``None`` means all ones.
        match: Index plan from `match_tokens`.
        mode: ``prune``, ``mean`` or ``mlerp``.

    Returns:
        The kept tokens in ``[prefix, unm, B]`` order and their sizes (``None`` while all ones).

    Shapes:
        x: [B, N, C]
        size: [B, N, 1]
        returns: [B, N - r, C], [B, N - r, 1]
    """
    num_out = match.num_out
    keep = match.order[:, :num_out]
    if mode is Mode.PRUNE:
        return gather_tokens(x, keep), None if size is None else gather_tokens(size, keep)

    r = match.r
    pairs = torch.cat([match.order[:, num_out:], keep.gather(1, match.dst_slot)], dim=1)  # src, dst positions
    x_pairs = gather_tokens(x, pairs)
    x_src, x_dst = x_pairs[:, :r], x_pairs[:, r:]
    same_group = (match.dst_slot[:, :, None] == match.dst_slot[:, None, :]).to(x.dtype)  # [B, r, r]
    if size is None:
        size = torch.ones_like(x[..., :1])
        group_size = 1.0 + same_group.sum(dim=-1, keepdim=True)
        merged = (x_dst + same_group @ x_src) / group_size
    else:
        size_pairs = gather_tokens(size, pairs)
        size_src, size_dst = size_pairs[:, :r], size_pairs[:, r:]
        group_size = size_dst + same_group @ size_src
        merged = (size_dst * x_dst + same_group @ (size_src * x_src)) / group_size
    if mode is Mode.MLERP:
        src_norm = x_src.norm(dim=-1)  # [B, r]
        group_max = torch.maximum(x_dst.norm(dim=-1), (same_group * src_norm[:, None, :]).amax(dim=-1))
        merged = merged / merged.norm(dim=-1, keepdim=True).clamp_min(EPS) * group_max[..., None]

    # Output slot o takes merged row k (the first source into o) if o is a destination, else its kept token.
    slots = torch.arange(num_out, device=x.device)
    into_slot = match.dst_slot[:, :, None] == slots  # [B, r, N - r]
    first_source = into_slot.to(x.dtype).argmax(dim=1)  # [B, N - r], first maximum on ties
    table = torch.where(into_slot.any(dim=1), x.shape[1] + first_source, keep)
    return gather_tokens(torch.cat([x, merged], dim=1), table), gather_tokens(
        torch.cat([size, group_size], dim=1), table
    )
