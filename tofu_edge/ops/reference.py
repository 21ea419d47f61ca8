"""Loop-based references of one fusion step: slow, plain, and the spec in code (docs/design.md, "The algorithm").

Everything fused (the vectorized ops, the exported graph, the plugin kernels) is tested against these; the
reference of a whole fused model is `tofu_edge.patch.reference.reference_forward`.
"""

from __future__ import annotations

import math

import torch

from tofu_edge.config import Selection, StepOp
from tofu_edge.ops.match import EPS
from tofu_edge.ops.select import ENERGY_MARGIN

__all__ = ["reference_step", "reference_scores", "reference_protected", "reference_match", "reference_merge"]


def reference_step(
    x: torch.Tensor,
    size: torch.Tensor,
    metric: torch.Tensor,
    num_prefix: int,
    r: int,
    op: StepOp,
    selection: Selection = Selection.BIPARTITE,
    protect: int = 0,
    attention: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One fusion step on one image, token by token: scores, protected tokens, match, merge.

    Shapes:
        x: [N, C]
        size: [N]
        metric: [N, Ck]
        attention: [N] (the class token's attention; ``selection=attention`` only)
        returns: [N - r, C], [N - r]
    """
    scores = reference_scores(metric, num_prefix)
    protected = reference_protected(scores, x.shape[0], num_prefix, selection, protect, attention)
    order, dst_slot = reference_match(scores, x.shape[0], num_prefix, r, protected)
    return reference_merge(x, size, order, dst_slot, r, op)


def reference_protected(
    scores, num_tokens: int, num_prefix: int, selection: Selection, protect: int, attention=None
) -> set[int]:
    """The positions of the A tokens a selection protects: the ``protect`` lowest energies (``energy``) or highest
    class-token attentions (``attention``), a tie going to the lower position.

    Shapes:
        scores: |A| lists of |B| floats
        attention: [N]
    """
    if selection is Selection.BIPARTITE or protect == 0:
        return set()
    a_set = [i for i in range(num_prefix, num_tokens) if i % 2 == 0]
    if selection is Selection.ENERGY:
        priority = {}
        for a, i in enumerate(a_set):
            row = [float(s) if float(s) >= ENERGY_MARGIN else math.exp(float(s) - ENERGY_MARGIN) - 1 for s in scores[a]]
            priority[i] = -sum(row) / len(row)
    else:
        priority = {i: float(attention[i]) for i in a_set}
    return set(sorted(a_set, key=lambda i: (-priority[i], i))[:protect])


def reference_scores(metric: torch.Tensor, num_prefix: int) -> list[list[float]]:
    """Cosine similarity of every A token (even positions) to every B token (odd positions), in float64.

    Shapes:
        metric: [N, Ck]
        returns: |A| lists of |B| scores
    """
    num_tokens = metric.shape[0]
    unit = [m.double() / max(float(m.double().norm()), EPS) for m in metric]
    a_set = [i for i in range(num_prefix, num_tokens) if i % 2 == 0]
    b_set = [j for j in range(num_prefix, num_tokens) if j % 2 == 1]
    return [[float(unit[i] @ unit[j]) for j in b_set] for i in a_set]


def reference_match(
    scores, num_tokens: int, num_prefix: int, r: int, protected: set[int] = frozenset()
) -> tuple[list[int], list[int]]:
    """The index plan of one step from its A-to-B scores (any ``[|A|][|B|]`` indexable of floats); ``protected``
    A positions rank below all others.

    Returns:
        ``order``: positions in output order ``[prefix, unm, B]`` then the sources in ascending position;
        ``dst_slot``: the output slot of each source's destination.
    """
    a_set = [i for i in range(num_prefix, num_tokens) if i % 2 == 0]
    b_set = [j for j in range(num_prefix, num_tokens) if j % 2 == 1]
    best: dict[int, tuple[float, int]] = {}
    for a, i in enumerate(a_set):
        best_score, best_b = -math.inf, -1
        for b in range(len(b_set)):
            if float(scores[a][b]) > best_score:  # strict: the lower index keeps a tie
                best_score, best_b = float(scores[a][b]), b
        best[i] = (best_score, best_b)

    ranked = sorted(a_set, key=lambda i: (i in protected, -best[i][0], i))
    sources = sorted(ranked[:r])
    unmerged = [i for i in a_set if i not in sources]
    first_b_slot = num_prefix + len(unmerged)
    order = list(range(num_prefix)) + unmerged + b_set + sources
    return order, [first_b_slot + best[i][1] for i in sources]


def reference_merge(
    x: torch.Tensor, size: torch.Tensor, order: list[int], dst_slot: list[int], r: int, op: StepOp
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply an index plan to one image: each kept token absorbs the sources whose destination it is.

    Shapes:
        x: [N, C]
        size: [N]
        returns: [N - r, C], [N - r]
    """
    num_out = len(order) - r
    rows, sizes = [], []
    for slot in range(num_out):
        group = [order[slot]] + [order[num_out + k] for k in range(r) if dst_slot[k] == slot]
        row, row_size = _merge_group([x[g] for g in group], [size[g] for g in group], op)
        rows.append(row)
        sizes.append(row_size)
    return torch.stack(rows), torch.stack(sizes)


def _merge_group(
    members: list[torch.Tensor], sizes: list[torch.Tensor], op: StepOp
) -> tuple[torch.Tensor, torch.Tensor]:
    """The destination (first member) after absorbing the others."""
    if len(members) == 1 or op is StepOp.PRUNE:
        return members[0], sizes[0]
    total_size = sum(sizes)
    average = sum(s * m for s, m in zip(sizes, members, strict=True)) / total_size
    if op is StepOp.MEAN:
        return average, total_size
    largest_norm = max(float(m.norm()) for m in members)
    return average / max(float(average.norm()), EPS) * largest_norm, total_size
