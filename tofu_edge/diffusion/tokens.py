"""Merge-then-unmerge on a latent token grid, with static shapes: a fixed A/B partition, exact matching, a
gather-only unmerge. No diffusers import: this is plain torch on ``[B, N, C]`` tokens.

The B set (destinations) holds one token per ``sy x sx`` cell of the grid at a fixed offset; every other token
is in A. Each A token finds its most similar B token (cosine of the tokens themselves, the lower index wins a
tie); the ``r`` A tokens with the highest best score are the sources (`tofu_edge.ops.source_order`: exact, ties
to the lower index). `tofu_edge.ops.fuse_tokens` removes them (prune, mean, MLERP); after the sub-module has run
on the ``N - r`` tokens, every original position reads one output row: its own slot, or, for a source, its
destination's slot. That read is one gather, so the unmerge needs no scatter at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tofu_edge.config import StepOp
from tofu_edge.diffusion.config import Destinations
from tofu_edge.ops.match import EPS, TokenMatch, source_order
from tofu_edge.ops.merge import fuse_tokens, gather_tokens

__all__ = ["GridPartition", "grid_partition", "match_grid", "merge_tokens", "unmerge_tokens"]


@dataclass(frozen=True)
class GridPartition:
    """The static A/B split of one ``height x width`` token grid (positions in row-major order).

    ``a_pos`` and ``b_pos`` are ascending; ``partition_index[p]`` is the index of position ``p`` in
    ``a_pos + b_pos``.
    """

    height: int
    width: int
    a_pos: tuple[int, ...] = field(repr=False)
    b_pos: tuple[int, ...] = field(repr=False)
    partition_index: tuple[int, ...] = field(repr=False)

    @property
    def num_tokens(self) -> int:
        return self.height * self.width

    @property
    def num_a(self) -> int:
        """Tokens that can be sources: the most ``r`` can be."""
        return len(self.a_pos)


def grid_partition(
    height: int, width: int, sx: int, sy: int, destinations: Destinations, module_index: int = 0
) -> GridPartition:
    """One destination per full ``sy x sx`` cell; rows and columns left over at the bottom and right are all A.

    Args:
        height: Grid rows (tokens).
        width: Grid columns (tokens).
        sx: Cell width.
        sy: Cell height.
        destinations: ``corner`` (offset 0) or ``cycle`` (offset ``(row * sx + col + module_index) mod (sx * sy)``
            for the cell in cell-row ``row`` and cell-column ``col``).
        module_index: The fused module's index in the model (moves the ``cycle`` offsets).
    """
    cell = sx * sy
    b_pos = []
    for row in range(height // sy):
        for col in range(width // sx):
            offset = 0 if destinations is Destinations.CORNER else (row * sx + col + module_index) % cell
            dy, dx = divmod(offset, sx)
            b_pos.append((row * sy + dy) * width + col * sx + dx)
    b_pos.sort()
    b_set = set(b_pos)
    a_pos = [p for p in range(height * width) if p not in b_set]
    index = {p: i for i, p in enumerate(a_pos + b_pos)}
    return GridPartition(height, width, tuple(a_pos), tuple(b_pos), tuple(index[p] for p in range(height * width)))


def match_grid(metric: torch.Tensor, partition: GridPartition, r: int) -> tuple[TokenMatch, torch.Tensor]:
    """Match the ``r`` A tokens most similar to a B token, and where every position reads its unmerged output.

    Args:
        metric: The tokens that are compared (cosine similarity).
        partition: The static A/B split of the grid.
        r: Sources, ``0 < r <= partition.num_a``.

    Returns:
        The `TokenMatch` of the step (kept tokens ``[unmerged A, B]``, then the sources) and ``slot``: the output row
        each original position reads after the sub-module ran.

    Shapes:
        metric: [B, N, C]
        returns: TokenMatch (order [B, N], dst_slot [B, r]), slot [B, N] (int64)
    """
    batch, device = metric.shape[0], metric.device
    a_pos = torch.tensor(partition.a_pos, device=device)
    b_pos = torch.tensor(partition.b_pos, device=device)
    num_a, num_b = len(partition.a_pos), len(partition.b_pos)
    num_unm = num_a - r

    unit = metric.detach()
    unit = unit / unit.norm(dim=-1, keepdim=True).clamp_min(EPS)
    scores = unit.index_select(1, a_pos) @ unit.index_select(1, b_pos).transpose(1, 2)  # [B, |A|, |B|]
    best_score, best_dst = scores.max(dim=-1)  # first maximum on ties
    a_order = source_order(best_score, r)  # [B, |A|]: sources, then the unmerged, each ascending
    a_sorted = a_pos[a_order]
    match = TokenMatch(
        kept=a_sorted[:, r:],
        dst=b_pos.expand(batch, num_b),
        src=a_sorted[:, :r],
        src_dst=best_dst.gather(1, a_order[:, :r]),
    )

    # where A token a went: rank[a] = k with a_order[k] = a (a sort of distinct small ints: exact on any backend)
    rank = (-a_order.to(torch.float32)).topk(num_a, dim=-1).indices
    a_slot = torch.where(rank < r, best_dst + num_unm, rank - r)
    b_slot = (torch.arange(num_b, device=device) + num_unm).expand(batch, num_b)
    slot = torch.cat([a_slot, b_slot], dim=1).index_select(1, torch.tensor(partition.partition_index, device=device))
    return match, slot


def merge_tokens(x: torch.Tensor, match: TokenMatch, op: StepOp) -> torch.Tensor:
    """The ``N - r`` kept tokens, the sources folded in by ``op`` (every token has size 1 here).

    Shapes:
        x: [B, N, C]
        returns: [B, N - r, C]
    """
    return fuse_tokens(x, None, match, op)[0]


def unmerge_tokens(y: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """Every original position's row of the merged output: one gather.

    Shapes:
        y: [B, N - r, C]
        slot: [B, N]
        returns: [B, N, C]
    """
    return gather_tokens(y, slot)
