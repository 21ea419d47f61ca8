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
        return x.index_select(1, index.reshape(-1))
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

    Every destination's group sum is one matmul with the one-hot assignment of the sources to the
    destinations (``[B, D, r]``, weighted by size relative to the destination's), so the step needs no scatter at
    all: the kept tokens are gathered, the destinations computed, and the two concatenated. Everything after that
    matmul works on per-destination scales (``[B, D, 1]``) and one multiply, which keeps the step cheap at batch 1.

    Args:
        x: Tokens after the attention residual.
        size: Patches each token stands for; ``None`` means all ones.
        match: Index plan from `match_tokens`.
        op: What to do with the sources (prune, mean or MLERP).

    Returns:
        The tokens in ``[kept, dst]`` order and their sizes (``None`` while all ones).

    Shapes:
        x: [B, N, C]
        size: [B, N, 1]
        returns: [B, N - r, C], [B, N - r, 1]
    """
    if op is StepOp.PRUNE:
        keep = torch.cat([match.kept, match.dst], dim=1)
        return gather_tokens(x, keep), None if size is None else gather_tokens(size, keep)

    x_dst, x_src = gather_tokens(x, match.dst), gather_tokens(x, match.src)
    assign = _assignment(match, x.dtype)  # [B, D, r]
    if size is None:
        size_dst = torch.ones_like(x_dst[..., :1])
        total = size_dst + assign.sum(dim=-1, keepdim=True)
        weight = assign
    else:
        size_dst, size_src = gather_tokens(size, match.dst), gather_tokens(size, match.src)
        total = size_dst + assign @ size_src
        weight = assign * (size_src.transpose(1, 2) / size_dst)  # [B, D, r]: each source's size over its destination's
    # The size-weighted group sum over the destination's size: exactly x_dst for a group of one (its weights are 0).
    summed = x_dst + weight @ x_src
    if op is StepOp.MLERP:  # the direction of the average (that of the sum: sizes are positive), the largest norm
        src_norm = x_src.norm(dim=-1)[:, None, :]  # [B, 1, r]
        largest = torch.maximum(x_dst.norm(dim=-1, keepdim=True), (assign * src_norm).amax(dim=-1, keepdim=True))
        scale = largest / summed.norm(dim=-1, keepdim=True).clamp_min(EPS)
        scale = torch.where(total > size_dst, scale, 1.0)  # a group of one stays exactly as it was
    else:
        scale = size_dst / total  # 1 exactly for a group of one
    new_dst = summed * scale  # the only full-width op after the group sum: scales are [B, D, 1]
    if size is None:
        kept_size = x_dst.new_ones((x_dst.shape[0], match.kept.shape[1], 1))
    else:
        kept_size = gather_tokens(size, match.kept)
    return (
        torch.cat([gather_tokens(x, match.kept), new_dst], dim=1),
        torch.cat([kept_size, total], dim=1),
    )


def merge_sources(sources: torch.Tensor, match: TokenMatch, op: StepOp) -> torch.Tensor:
    """Apply a `TokenMatch` to what each token stands for: the kept tokens' rows of ``sources``, where a merged
    source's row joins (is added to) its destination's row and a pruned source's row is dropped.

    With one-hot rows over the original patches this tracks which patches every token holds (`tofu_edge.visualize`).
    Group sums come from the one-hot assignment matmul, as in `fuse_tokens`: no scatter.

    Shapes:
        sources: [B, N, T]
        returns: [B, N - r, T]
    """
    dst = gather_tokens(sources, match.dst)
    if op is not StepOp.PRUNE:
        dst = dst + _assignment(match, sources.dtype) @ gather_tokens(sources, match.src)
    return torch.cat([gather_tokens(sources, match.kept), dst], dim=1)


def _assignment(match: TokenMatch, dtype: torch.dtype) -> torch.Tensor:
    """``assign[b, d, k] = 1`` where source ``k`` goes to destination ``d``, ``[B, D, r]``."""
    destinations = torch.arange(match.dst.shape[1], device=match.dst.device)
    return (destinations[:, None] == match.src_dst[:, None, :]).to(dtype)
