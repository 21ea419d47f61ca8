"""The loop reference of a whole fused ViT: image by image, with the reference fusion step.

Each block runs its own attention and MLP residuals (`FusedBlock.attention_residual` / `mlp_residual`, timm's
modules), while the matching metric and the fusion step are computed independently here: keys from
``attn.qkv`` and ``attn.k_norm`` averaged over heads, then `reference_step`'s token-by-token loops.
"""

from __future__ import annotations

import torch

from tofu_edge.ops.reference import reference_step
from tofu_edge.patch.timm import embed_tokens, is_fused

__all__ = ["reference_forward"]


def reference_forward(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Outputs of a fused model computed image by image with the loop reference of every fusion step.

    Args:
        model: A model fused by `tofu_edge.fuse` (its ``tofu_plan`` is followed).

    Raises:
        ValueError: ``model`` is not fused.

    Shapes:
        images: [B, 3, H, W]
        returns: [B, num_classes]
    """
    if not is_fused(model):
        raise ValueError("reference_forward follows a fused model's plan: call tofu_edge.fuse(model, config) first")
    outputs = []
    for image in images:
        x = embed_tokens(model, image[None])
        size = torch.ones(1, x.shape[1], 1)
        for block in model.blocks:
            step = block.tofu_step
            keys, attention = _mean_keys_and_class_attention(block.attn, block.norm1(x), size, step.prop_attn)
            x, _, _ = block.attention_residual(x, size)
            if step.r > 0:
                tokens, sizes = reference_step(
                    x[0], size[0, :, 0], keys[0], step.num_prefix, step.r, step.op,
                    step.selection, step.protect, attention[0],
                )  # fmt: skip
                x, size = tokens[None], sizes[None, :, None]
            x = block.mlp_residual(x)
        outputs.append(_reference_head(model, model.norm(x), size[0, :, 0]))
    return torch.cat(outputs)


def _mean_keys_and_class_attention(
    attn: torch.nn.Module, x: torch.Tensor, size: torch.Tensor, proportional: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys averaged over heads and the class token's head-averaged attention probabilities, from the full qkv
    projection and an explicit softmax.

    Shapes:
        x: [B, N, C]
        size: [B, N, 1]
        returns: [B, N, D], [B, N]
    """
    batch, num_tokens, _ = x.shape
    qkv = attn.qkv(x).reshape(batch, num_tokens, 3, attn.num_heads, attn.head_dim)
    queries = attn.q_norm(qkv[:, :, 0].transpose(1, 2))  # [B, H, N, D]
    keys = attn.k_norm(qkv[:, :, 1].transpose(1, 2))
    logits = (queries @ keys.transpose(-2, -1)) * attn.scale  # [B, H, N, N]
    if proportional:
        logits = logits + size.log()[:, None, :, 0][:, :, None, :]
    return keys.mean(dim=1), logits.softmax(dim=-1)[:, :, 0].mean(dim=1)


def _reference_head(model: torch.nn.Module, x: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """The model's head; average pooling weighted by size, summed plainly.

    Shapes:
        x: [1, N, C]
        size: [N]
    """
    if model.global_pool != "avg":
        return model.forward_head(x)
    prefix = model.num_prefix_tokens
    weights = size[prefix:, None]
    pooled = (x[0, prefix:] * weights).sum(dim=0) / weights.sum()
    return model.head(model.head_drop(model.fc_norm(pooled[None])))
