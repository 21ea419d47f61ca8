"""Bipartite soft matching with static shapes: the index plan of one fusion step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TokenMatch", "match_tokens", "cosine_scores", "match_scores", "source_order", "split_starts", "EPS"]

EPS = 1e-6  # guards the division by a zero norm (metric rows, merged averages)


@dataclass(frozen=True)
class TokenMatch:
    """Where every token of one fusion step goes. Positions index the block's full sequence.

    ``order`` lists the tokens in output order followed by the sources: ``[prefix, unm, B, src]``. The
    first ``N - r`` entries are the kept tokens, the last ``r`` the sources, and ``dst_slot`` gives the
    output slot (in ``[0, N - r)``) of each source's destination.

    Shapes:
        order: [B, N] (int64)
        dst_slot: [B, r] (int64)
    """

    order: torch.Tensor
    dst_slot: torch.Tensor
    r: int

    @property
    def num_out(self) -> int:
        """Tokens kept, ``N - r``."""
        return self.order.shape[1] - self.r


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
    return metric[:, a_start::2] @ metric[:, b_start::2].transpose(1, 2)


def match_scores(scores: torch.Tensor, num_tokens: int, num_prefix: int, r: int) -> TokenMatch:
    """The index plan from A-to-B scores: best partners, a stable ranking, the top ``r`` as sources.

    Shapes:
        scores: [B, |A|, |B|]
    """
    batch, num_a, num_b = scores.shape
    a_start, b_start = split_starts(num_prefix)
    best_score, best_dst = scores.max(dim=-1)  # first maximum on ties
    a_order = source_order(best_score, r)
    positions = a_start + 2 * a_order  # [B, |A|] positions in the sequence

    prefix = torch.arange(num_prefix, device=scores.device).expand(batch, num_prefix)
    b_pos = torch.arange(b_start, num_tokens, 2, device=scores.device).expand(batch, num_b)
    order = torch.cat([prefix, positions[:, r:], b_pos, positions[:, :r]], dim=1)
    dst_slot = best_dst.gather(1, a_order[:, :r]) + (num_prefix + num_a - r)
    return TokenMatch(order=order, dst_slot=dst_slot, r=r)


def source_order(best_score: torch.Tensor, r: int) -> torch.Tensor:
    """The A tokens reordered: the ``r`` with the highest best score (the sources) first, then the others, each
    part in ascending index. Ties go to the lower index, exactly, so every backend picks the same sources.

    Shapes:
        best_score: [B, |A|]
        returns: [B, |A|] (int64 indices into A)
    """
    num_a = best_score.shape[-1]
    # Rank of each A token in a stable descending sort of its best score: exact, so every backend agrees.
    # j is ahead of i if it scores higher, or the same with a lower index.
    others, own = best_score[:, None, :], best_score[:, :, None]
    ahead = (others > own) | ((others == own) & _strictly_lower(num_a, best_score.device))
    rank = ahead.to(torch.float32).sum(dim=-1)  # [B, |A|]

    # Unique integer keys: sources first, then the unmerged tokens in ascending position.
    reverse_index = torch.arange(num_a - 1, -1, -1, device=best_score.device, dtype=torch.float32)
    key = torch.where(rank < r, reverse_index + num_a, reverse_index)
    return key.topk(num_a, dim=-1).indices


def _strictly_lower(n: int, device: torch.device) -> torch.Tensor:
    """``mask[i, j] = j < i``, shape [n, n]."""
    index = torch.arange(n, device=device)
    return index[None, :] < index[:, None]
