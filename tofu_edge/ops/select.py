"""Selection strategies: which A tokens may become sources of a fusion step, with static shapes.

Bipartite soft matching (ToMe) lets every A token become a source; the ``r`` with the best match go. The other
strategies keep ToMe's matching but first *protect* a fixed number of A tokens, which then stay as they are:

- ``energy``: the A tokens with the lowest energy, i.e. least similar to the B set (isolated tokens carrying
  information of their own). A token's energy is the mean over B of ``f(cos)``, where ``f`` keeps similarities
  above a margin and flattens the ones below it (``exp(s - margin) - 1``), so a few near-duplicates count for
  more than many loose resemblances (the energy score of PiToMe, Tran et al., NeurIPS 2024, computed from the
  A-to-B scores the matching has already).
- ``attention``: the A tokens the class token attends to most (head-averaged attention probabilities of the
  class token's query, with the proportional-attention bias where the block uses it), as in attention-guided
  pruning (EViT, PPT).

The protected count is a Python int fixed with the plan (`tofu_edge.plan.protected_count`): a fraction of the A
tokens, capped so that ``r`` unprotected ones remain. Protection is exact and backend-independent: the ``protect``
tokens of highest priority, a tie going to the lower index (`tofu_edge.ops.match.descending_rank`, the ranking the
source order uses too).
"""

from __future__ import annotations

import torch

from tofu_edge.config import Selection
from tofu_edge.ops.match import TokenMatch, cosine_scores, descending_rank, match_scores, split_starts, token_range

__all__ = [
    "ENERGY_MARGIN",
    "energy_scores",
    "protect_top",
    "select_tokens",
]

ENERGY_MARGIN = 0.5  # similarities below it count as ``exp(s - margin) - 1`` in the energy


def energy_scores(scores: torch.Tensor, margin: float = ENERGY_MARGIN) -> torch.Tensor:
    """Each A token's energy: the mean over B of its similarities, those below ``margin`` flattened.

    Shapes:
        scores: [B, |A|, |B|] (cosine similarities)
        returns: [B, |A|]
    """
    flattened = torch.where(scores >= margin, scores, torch.exp(scores - margin) - 1.0)
    return flattened.mean(dim=-1)


def protect_top(priority: torch.Tensor, protect: int) -> torch.Tensor:
    """The ``protect`` tokens of highest priority (the lower index wins a tie), as a mask.

    Shapes:
        priority: [B, |A|]
        returns: [B, |A|] (bool)
    """
    return descending_rank(priority) < protect


def select_tokens(
    metric: torch.Tensor,
    num_prefix: int,
    r: int,
    selection: Selection,
    protect: int,
    attention: torch.Tensor | None = None,
) -> TokenMatch:
    """`tofu_edge.ops.match.match_tokens` with ``protect`` A tokens taken out of the sources by ``selection``.

    Args:
        metric: Matching features (keys averaged over heads).
        num_prefix: Protected prefix tokens ``P``.
        r: Sources to pick.
        selection: The strategy (``bipartite`` protects nothing).
        protect: A tokens to protect (`tofu_edge.plan.protected_count`).
        attention: The class token's attention to every token (`tofu_edge.patch.attention.class_attention`);
            needed by ``attention`` only.

    Shapes:
        metric: [B, N, Ck]
        attention: [B, N]
    """
    scores = cosine_scores(metric, num_prefix)
    num_tokens = metric.shape[1]
    if selection is Selection.BIPARTITE or protect == 0:
        return match_scores(scores, num_tokens, num_prefix, r)
    if selection is Selection.ENERGY:
        priority = -energy_scores(scores)  # the lowest energy is protected first
    else:
        if attention is None:
            raise ValueError("selection=attention needs the class token's attention")
        priority = token_range(attention, split_starts(num_prefix)[0], num_tokens, 2)
    return match_scores(scores, num_tokens, num_prefix, r, protected=protect_top(priority, protect))
