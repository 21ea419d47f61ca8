"""Bipartite soft matching with static shapes: the index plan of one fusion step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "TokenMatch",
    "match_tokens",
    "cosine_scores",
    "match_scores",
    "source_order",
    "split_starts",
    "token_range",
    "descending_rank",
    "EPS",
]

EPS = 1e-6  # guards the division by a zero norm (metric rows, merged averages)


@dataclass(frozen=True)
class TokenMatch:
    """Where every token of one fusion step goes, as positions in the block's full sequence.

    The output is ``[kept, dst]``: ``kept`` are the tokens that stay as they are (the prefix and the unmatched A
    tokens, in order), ``dst`` the tokens that may absorb sources (B, in order); ``src`` are the ``r`` tokens
    removed, each absorbed by (or, when pruning, dropped beside) ``dst[:, src_dst]``.

    Shapes:
        kept: [B, N - r - D] (int64)
        dst: [B, D] (int64)
        src: [B, r] (int64)
        src_dst: [B, r] (int64, indices into ``dst``)
    """

    kept: torch.Tensor
    dst: torch.Tensor
    src: torch.Tensor
    src_dst: torch.Tensor

    @property
    def r(self) -> int:
        """Tokens removed."""
        return self.src.shape[1]

    @property
    def num_out(self) -> int:
        """Tokens kept, ``N - r``."""
        return self.kept.shape[1] + self.dst.shape[1]

    @property
    def order(self) -> torch.Tensor:
        """Every position in output order, then the sources: ``[kept, dst, src]``, ``[B, N]``."""
        return torch.cat([self.kept, self.dst, self.src], dim=1)

    @property
    def dst_slot(self) -> torch.Tensor:
        """The output slot (in ``[0, N - r)``) of each source's destination, ``[B, r]``."""
        return self.src_dst + self.kept.shape[1]

    @classmethod
    def from_order(cls, order: torch.Tensor, dst_slot: torch.Tensor, r: int, num_dst: int) -> TokenMatch:
        """The match whose `order` and `dst_slot` these are (the plugin contract's form), destinations being the
        last ``num_dst`` kept slots.

        Shapes:
            order: [B, N]
            dst_slot: [B, r]
        """
        num_kept = order.shape[1] - r - num_dst
        return cls(
            kept=order[:, :num_kept],
            dst=order[:, num_kept : num_kept + num_dst],
            src=order[:, num_kept + num_dst :],
            src_dst=dst_slot - num_kept,
        )


def split_starts(num_prefix: int) -> tuple[int, int]:
    """First positions of the A set (even positions) and the B set (odd positions) after the prefix."""
    a_start = num_prefix + num_prefix % 2
    return a_start, 2 * num_prefix + 1 - a_start


def match_tokens(metric: torch.Tensor, num_prefix: int, r: int) -> TokenMatch:
    """Match the ``r`` most redundant A tokens to their most similar B tokens.

    A holds the non-prefix tokens at even positions, B those at odd positions. Every A token picks its
    best B partner by cosine similarity (the lower index wins a tie); the ``r`` A tokens with the highest
    best score become sources (again the lower index wins a tie); the others stay in their order.

    Args:
        metric: Matching features (keys averaged over heads).
        num_prefix: Protected prefix tokens ``P`` that never take part.
        r: Sources to pick, ``0 < r <= |A|``.

    Returns:
        The index plan of the step.

    Shapes:
        metric: [B, N, Ck]
    """
    return match_scores(cosine_scores(metric, num_prefix), metric.shape[1], num_prefix, r)


def cosine_scores(metric: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Cosine similarity of every A token to every B token.

    Shapes:
        metric: [B, N, Ck]
        returns: [B, |A|, |B|]
    """
    a_start, b_start = split_starts(num_prefix)
    metric = metric.detach()
    metric = metric / metric.norm(dim=-1, keepdim=True).clamp_min(EPS)
    num_tokens = metric.shape[1]
    return token_range(metric, a_start, num_tokens, 2) @ token_range(metric, b_start, num_tokens, 2).transpose(1, 2)


def match_scores(
    scores: torch.Tensor, num_tokens: int, num_prefix: int, r: int, protected: torch.Tensor | None = None
) -> TokenMatch:
    """The index plan from A-to-B scores: best partners, a stable ranking, the top ``r`` as sources.

    ``protected`` A tokens rank below every other one (their best score counts as -inf), so they become sources
    only where fewer than ``r`` others are left, which the plan never allows (`tofu_edge.ops.select`).

    Shapes:
        scores: [B, |A|, |B|]
        protected: [B, |A|] (bool)
    """
    batch, num_a, num_b = scores.shape
    a_start, b_start = split_starts(num_prefix)
    best_score, best_dst = scores.max(dim=-1)  # first maximum on ties
    if protected is not None:
        best_score = best_score.masked_fill(protected, float("-inf"))
    a_order = source_order(best_score, r)
    positions = a_start + 2 * a_order  # [B, |A|] positions in the sequence: sources, then the unmatched
    kept = token_range(positions, r, num_a)
    if num_prefix:
        kept = torch.cat([torch.arange(num_prefix, device=scores.device).expand(batch, num_prefix), kept], dim=1)
    return TokenMatch(
        kept=kept,
        dst=torch.arange(b_start, num_tokens, 2, device=scores.device).expand(batch, num_b),
        src=token_range(positions, 0, r),
        src_dst=best_dst.gather(1, token_range(a_order, 0, r)),
    )


def token_range(x: torch.Tensor, start: int, stop: int, step: int = 1) -> torch.Tensor:
    """``x[:, start:stop:step]``: a view in PyTorch, one Gather with constant indices when exported.

    TensorRT's ONNX parser turns every Slice into about 25 layers of index arithmetic (even with constant
    bounds), a Gather into two; onnxruntime runs either as one copy.

    Shapes:
        x: [B, N, ...]
        returns: [B, len(range(start, stop, step)), ...]
    """
    if torch.compiler.is_exporting():
        return x.index_select(1, torch.arange(start, stop, step, device=x.device))
    return x[:, start:stop:step]


def source_order(best_score: torch.Tensor, r: int) -> torch.Tensor:
    """The A tokens reordered: the ``r`` with the highest best score (the sources) first, then the others, each
    part in ascending index. Ties go to the lower index, exactly, so every backend picks the same sources.

    Shapes:
        best_score: [B, |A|]
        returns: [B, |A|] (int64 indices into A)
    """
    if torch.compiler.is_exporting():
        return _exported_source_order(best_score, r)
    # A stable descending sort: equal scores keep ascending index order, so the lower index wins a tie exactly.
    by_score = best_score.sort(dim=-1, descending=True, stable=True).indices
    # Each part back in ascending index (the indices are distinct, so any order of equal keys cannot arise).
    sources = by_score[:, :r].topk(r, dim=-1, largest=False).values
    unmerged = by_score[:, r:].topk(best_score.shape[-1] - r, dim=-1, largest=False).values
    return torch.cat([sources, unmerged], dim=1)


def _exported_source_order(best_score: torch.Tensor, r: int) -> torch.Tensor:
    """`source_order` in portable ops whose result does not depend on a backend's tie order: ONNX has no stable
    sort, and TensorRT documents no tie order for its TopK. Each token's rank in the stable descending order is
    counted exactly (`descending_rank`); one TopK over distinct integer keys then orders the tokens.

    Shapes:
        best_score: [B, |A|]
        returns: [B, |A|] (int64 indices into A)
    """
    num_a = best_score.shape[-1]
    rank = descending_rank(best_score)
    # Distinct keys: sources first, then the unmerged tokens, each in ascending index.
    reverse_index = torch.arange(num_a - 1, -1, -1, device=best_score.device, dtype=torch.float32)
    key = torch.where(rank < r, reverse_index + num_a, reverse_index)
    return key.topk(num_a, dim=-1).indices


def descending_rank(values: torch.Tensor) -> torch.Tensor:
    """Each entry's rank in the stable descending order of its row (0 = the largest; a tie goes to the lower index).

    Exported, the rank is counted by comparisons (``j`` is ahead of ``i`` if it is larger, or equal with a lower
    index), so it does not depend on any backend's sort or TopK tie order; in PyTorch it comes from a stable sort.

    Shapes:
        values: [B, K]
        returns: [B, K] (float32 when exported, int64 in PyTorch; exact small integers either way)
    """
    num = values.shape[-1]
    index = torch.arange(num, device=values.device)
    if torch.compiler.is_exporting():
        others, own = values[:, None, :], values[:, :, None]
        ahead = (others > own) | ((others == own) & (index[None, :] < index[:, None]))
        return ahead.to(torch.float32).sum(dim=-1)
    ranked = values.sort(dim=-1, descending=True, stable=True).indices
    return torch.empty_like(ranked).scatter_(1, ranked, index.expand_as(ranked))
