"""Tiny, seeded configurations of the real timm models that fusion supports."""

from __future__ import annotations

import pytest
import torch

import tofu_edge

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=3)

# name -> (timm model, overrides); token counts: vit 17, distilled 18, dinov2-reg 21, avg-pooled 16
FAMILIES = {
    "vit": ("vit_small_patch16_224", {}),
    "deit_distilled": ("deit_small_distilled_patch16_224", {}),
    "deit3_layerscale": ("deit3_small_patch16_224", {}),
    "dinov2_registers": ("vit_small_patch14_reg4_dinov2", dict(patch_size=14, img_size=56)),
    "clip_norm_pre": ("vit_base_patch16_clip_224", {}),
    "qk_norm": ("vit_small_patch16_224", dict(qk_norm=True)),
    "avg_pool": ("vit_medium_patch16_gap_256", {}),
}


def tiny_model(family: str, fused_attn: bool = True, seed: int = 0) -> torch.nn.Module:
    """A tiny random-weight model of ``family`` in eval mode, with LayerScale and biases made non-trivial."""
    name, overrides = FAMILIES[family]
    torch.manual_seed(seed)
    model = tofu_edge.create_model(name, **{**TINY, **overrides})
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param_name.endswith((".gamma", "bias")):  # timm initialises these to constants
                param.normal_(0.0, 0.1 if param_name.endswith("bias") else 0.5)
    for block in model.blocks:
        block.attn.fused_attn = fused_attn
    return model


def images_for(model: torch.nn.Module, batch: int = 2, seed: int = 1) -> torch.Tensor:
    """Random images of the model's input size."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *model.patch_embed.img_size, generator=generator)


@pytest.fixture(params=sorted(FAMILIES))
def family(request) -> str:
    return request.param
