"""Loop reference of one merge-then-unmerge step on one sample: slow, plain, the spec in code (docs/diffusion.md).

The vectorized step (`tofu_edge.diffusion.tokens`, the fused sub-modules, the exported graph) is tested against it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from tofu_edge.config import StepOp
from tofu_edge.diffusion.tokens import GridPartition
from tofu_edge.ops.match import EPS

__all__ = ["reference_plan", "reference_merge_unmerge"]


def reference_plan(metric: torch.Tensor, partition: GridPartition, r: int) -> tuple[list[int], dict[int, int]]:
    """The kept positions in output order (``[unmerged A ascending, B ascending]``) and each source's destination.

    Every A token's partner is its most similar B token by cosine (float64; the first maximum wins a tie); the
    ``r`` A tokens with the highest partner score are the sources (the lower position wins a tie).

    Shapes:
        metric: [N, C]
    """
    unit = [m.double() / max(float(m.double().norm()), EPS) for m in metric]
    best: dict[int, tuple[float, int]] = {}
    for a in partition.a_pos:
        score, partner = -math.inf, -1
        for b in partition.b_pos:
            value = float(unit[a] @ unit[b])
            if value > score:  # strict: the lower B position keeps a tie
                score, partner = value, b
        best[a] = (score, partner)
    sources = set(sorted(partition.a_pos, key=lambda a: (-best[a][0], a))[:r])
    kept = [a for a in partition.a_pos if a not in sources] + list(partition.b_pos)
    return kept, {a: best[a][1] for a in sorted(sources)}


def reference_merge_unmerge(
    x: torch.Tensor, partition: GridPartition, r: int, op: StepOp, fn: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Merge ``x`` (its own tokens are the metric), apply ``fn`` to the ``N - r`` tokens, unmerge.

    A destination's group is itself plus the sources that chose it. ``prune`` keeps the destination as it is,
    ``mean`` takes the group's average, ``mlerp`` that average's direction with the largest norm in the group.
    After ``fn``, a kept token reads its own output row and a source its destination's.

    Shapes:
        x: [N, C]
        returns: [N, C_out]
    """
    kept, destination = reference_plan(x, partition, r)
    rows = []
    for position in kept:
        group = [x[position]] + [x[s] for s, d in destination.items() if d == position]
        rows.append(_merge_group(group, op))
    y = fn(torch.stack(rows))
    slot = {position: index for index, position in enumerate(kept)}
    slot.update({s: slot[d] for s, d in destination.items()})
    return torch.stack([y[slot[p]] for p in range(partition.num_tokens)])


def _merge_group(members: list[torch.Tensor], op: StepOp) -> torch.Tensor:
    if len(members) == 1 or op is StepOp.PRUNE:
        return members[0]
    average = sum(members) / len(members)
    if op is StepOp.MEAN:
        return average
    largest = max(float(m.norm()) for m in members)
    return average / max(float(average.norm()), EPS) * largest
