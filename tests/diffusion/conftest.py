"""Tiny, seeded, randomly initialised diffusers models of every family that `tofu_edge.diffusion` supports."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers", reason="tofu_edge.diffusion needs diffusers (pip install diffusers)")

from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel, UNet2DConditionModel  # noqa: E402

TINY_UNET = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    cross_attention_dim=32,
    attention_head_dim=8,
    sample_size=16,
    norm_num_groups=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
TINY_DIT = dict(
    num_attention_heads=2,
    attention_head_dim=8,
    in_channels=4,
    num_layers=2,
    sample_size=8,
    patch_size=2,
    num_embeds_ada_norm=10,
)
TINY_PIXART = dict(
    num_attention_heads=2,
    attention_head_dim=8,
    in_channels=4,
    out_channels=8,
    num_layers=2,
    sample_size=8,
    patch_size=2,
    cross_attention_dim=16,
    caption_channels=16,
)
FAMILIES = ("unet", "dit", "pixart")


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    """A tiny random model in eval mode; zero-initialised output layers get random weights so outputs differ."""
    torch.manual_seed(seed)
    if family == "unet":
        model = UNet2DConditionModel(**TINY_UNET)
    elif family == "dit":
        model = DiTTransformer2DModel(**TINY_DIT)
    else:
        model = PixArtTransformer2DModel(**TINY_PIXART)
    with torch.no_grad():
        for param in model.parameters():
            if torch.count_nonzero(param) == 0:  # adaLN-zero and zero-init projections
                param.normal_(0.0, 0.05)
    return model.eval()


def step_kwargs(model: torch.nn.Module, batch: int = 2, seed: int = 1, size: int | None = None) -> dict:
    """Keyword inputs of one step (``return_dict=False``)."""
    generator = torch.Generator().manual_seed(seed)
    size = size or model.config.sample_size
    latent = torch.randn(batch, model.config.in_channels, size, size, generator=generator)
    timestep = torch.randint(0, 1000, (batch,), generator=generator).float()
    if isinstance(model, UNet2DConditionModel):
        context = torch.randn(batch, 5, model.config.cross_attention_dim, generator=generator)
        return {"sample": latent, "timestep": timestep, "encoder_hidden_states": context, "return_dict": False}
    if isinstance(model, DiTTransformer2DModel):
        labels = torch.randint(0, 10, (batch,), generator=generator)
        return {"hidden_states": latent, "timestep": timestep, "class_labels": labels, "return_dict": False}
    context = torch.randn(batch, 6, model.config.caption_channels, generator=generator)
    conditions = {"resolution": None, "aspect_ratio": None}
    return {
        "hidden_states": latent,
        "timestep": timestep,
        "encoder_hidden_states": context,
        "added_cond_kwargs": conditions,
        "return_dict": False,
    }


def run(model: torch.nn.Module, kwargs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**kwargs)[0]


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param
