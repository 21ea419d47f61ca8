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

    Group sums come from a one-hot assignment matmul (``[B, r, N - r]``), not a scatter, so the step
    exports to standard ONNX ops.

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
    ordered = gather_tokens(x, match.order)
    x_keep, x_src = ordered[:, :num_out], ordered[:, num_out:]
    if size is not None:
        ordered_size = gather_tokens(size, match.order)
        size_keep, size_src = ordered_size[:, :num_out], ordered_size[:, num_out:]
    if mode is Mode.PRUNE:
        return x_keep, None if size is None else size_keep

    slots = torch.arange(num_out, device=x.device)
    assign = (match.dst_slot[..., None] == slots).to(x.dtype)  # [B, r, N - r]
    assign_t = assign.transpose(1, 2)
    if size is None:
        total = x_keep + assign_t @ x_src
        new_size = 1.0 + assign.sum(dim=1)[..., None]
        merged_mask = new_size > 1.0
    else:
        total = size_keep * x_keep + assign_t @ (size_src * x_src)
        new_size = size_keep + assign_t @ size_src
        merged_mask = new_size > size_keep
    average = total / new_size
    if mode is Mode.MLERP:
        src_norm = x_src.norm(dim=-1, keepdim=True)  # [B, r, 1]
        group_max = (assign * src_norm).amax(dim=1)  # [B, N - r]
        max_norm = torch.maximum(x_keep.norm(dim=-1), group_max)[..., None]
        average = average / average.norm(dim=-1, keepdim=True).clamp_min(EPS) * max_norm
    return torch.where(merged_mask, average, x_keep), new_size
