"""Loop-based references of the fusion step and of a fused ViT: slow, plain, and the spec in code.

Everything fused (the vectorized ops, the exported graph, the plugin kernels) is tested against these.
"""

from __future__ import annotations

import math

import torch

from tofu_edge.config import Mode
from tofu_edge.ops.match import EPS
from tofu_edge.plan import FusionPlan

__all__ = ["reference_step", "reference_scores", "reference_match", "reference_merge", "reference_forward"]


def reference_step(
    x: torch.Tensor, size: torch.Tensor, metric: torch.Tensor, num_prefix: int, r: int, mode: Mode
) -> tuple[torch.Tensor, torch.Tensor]:
    """One fusion step on one image, token by token (DESIGN.md §1): scores, match, merge.

    Shapes:
        x: [N, C]
        size: [N]
        metric: [N, Ck]
        returns: [N - r, C], [N - r]
    """
    order, dst_slot = reference_match(reference_scores(metric, num_prefix), x.shape[0], num_prefix, r)
    return reference_merge(x, size, order, dst_slot, r, mode)


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


def reference_match(scores, num_tokens: int, num_prefix: int, r: int) -> tuple[list[int], list[int]]:
    """The index plan of one step from its A-to-B scores (any ``[|A|][|B|]`` indexable of floats).

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

    ranked = sorted(a_set, key=lambda i: (-best[i][0], i))
    sources = sorted(ranked[:r])
    unmerged = [i for i in a_set if i not in sources]
    first_b_slot = num_prefix + len(unmerged)
    order = list(range(num_prefix)) + unmerged + b_set + sources
    return order, [first_b_slot + best[i][1] for i in sources]


def reference_merge(
    x: torch.Tensor, size: torch.Tensor, order: list[int], dst_slot: list[int], r: int, mode: Mode
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
        row, row_size = _merge_group([x[g] for g in group], [size[g] for g in group], mode)
        rows.append(row)
        sizes.append(row_size)
    return torch.stack(rows), torch.stack(sizes)


def _merge_group(
    members: list[torch.Tensor], sizes: list[torch.Tensor], mode: Mode
) -> tuple[torch.Tensor, torch.Tensor]:
    """The destination (first member) after absorbing the others."""
    if len(members) == 1 or mode is Mode.PRUNE:
        return members[0], sizes[0]
    total_size = sum(sizes)
    average = sum(s * m for s, m in zip(sizes, members, strict=True)) / total_size
    if mode is Mode.MEAN:
        return average, total_size
    largest_norm = max(float(m.norm()) for m in members)
    return average / max(float(average.norm()), EPS) * largest_norm, total_size


def reference_forward(model: torch.nn.Module, plan: FusionPlan, images: torch.Tensor) -> torch.Tensor:
    """Logits of ``model`` fused by ``plan``, computed image by image with timm's own attention.

    ``model`` may be fused or not: only its timm sub-modules are used. Keys for matching are computed
    separately from ``attn.qkv``/``attn.k_norm``; proportional attention goes in through timm's
    ``attn_mask``.

    Shapes:
        images: [B, 3, H, W]
        returns: [B, num_classes]
    """
    outputs = []
    for image in images:
        x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(image[None]))))[0]
        size = torch.ones(x.shape[0])
        for block, step in zip(model.blocks, plan.blocks, strict=True):
            normed = block.norm1(x)[None]
            bias = size.log()[None, None, None, :] if plan.config.prop_attn else None
            x = x + block.drop_path1(block.ls1(block.attn(normed, attn_mask=bias)))[0]
            if step.r > 0:
                x, size = reference_step(x, size, _keys(block.attn, normed)[0], step.num_prefix, step.r, step.mode)
            x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x[None]))))[0]
        x = model.norm(x[None])
        outputs.append(_reference_head(model, x, size))
    return torch.cat(outputs)


def _keys(attn: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Keys averaged over heads, ``[B, N, D]``."""
    batch, num_tokens, _ = x.shape
    qkv = attn.qkv(x).reshape(batch, num_tokens, 3, attn.num_heads, attn.head_dim)
    keys = attn.k_norm(qkv[:, :, 1].transpose(1, 2))  # [B, H, N, D]
    return keys.mean(dim=1)


def _reference_head(model: torch.nn.Module, x: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    if model.global_pool != "avg":
        return model.forward_head(x)
    prefix = model.num_prefix_tokens
    weights = size[prefix:, None]
    pooled = (x[0, prefix:] * weights).sum(dim=0) / weights.sum()
    return model.head(model.head_drop(model.fc_norm(pooled[None])))
