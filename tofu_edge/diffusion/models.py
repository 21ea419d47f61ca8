"""Diffusion models by name: random-weight presets (SD 1.5's UNet, DiT-S/2, tiny test models) or a local diffusers
folder (``from_pretrained`` without a network)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel, UNet2DConditionModel

from tofu_edge.diffusion.family import Family
from tofu_edge.errors import CheckpointError, UnknownModelError, UnsupportedModelError
from tofu_edge.weights import seeded

__all__ = ["PRESETS", "create_diffusion_model"]

_TINY_UNET = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    cross_attention_dim=32,
    attention_head_dim=8,
    sample_size=16,
    norm_num_groups=8,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
)
# name -> (class, config); the configs not given are diffusers' defaults
PRESETS: dict[str, tuple[type, dict]] = {
    "sd15-unet": (UNet2DConditionModel, dict(sample_size=64, cross_attention_dim=768)),
    "sd21-unet": (
        UNet2DConditionModel,
        dict(sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True),
    ),
    "dit-s2": (
        DiTTransformer2DModel,
        dict(num_attention_heads=6, attention_head_dim=64, num_layers=12, sample_size=32, num_embeds_ada_norm=1000),
    ),
    "tiny-unet": (UNet2DConditionModel, _TINY_UNET),
    "tiny-dit": (
        DiTTransformer2DModel,
        dict(num_attention_heads=2, attention_head_dim=8, num_layers=2, sample_size=8, num_embeds_ada_norm=10),
    ),
    "tiny-pixart": (
        PixArtTransformer2DModel,
        dict(
            num_attention_heads=2,
            attention_head_dim=8,
            in_channels=4,
            out_channels=8,
            num_layers=2,
            sample_size=8,
            cross_attention_dim=16,
            caption_channels=16,
        ),
    ),
}
_CLASSES = {family.model_class.__name__: family.model_class for family in Family}


def create_diffusion_model(name: str | Path, *, subfolder: str | None = None, seed: int = 0) -> torch.nn.Module:
    """A preset with random weights (seeded), or the model in a local diffusers folder, in eval mode.

    Args:
        name: One of ``PRESETS`` or a folder holding ``config.json`` and weights (``save_pretrained``'s layout).
        subfolder: The model's subfolder of a pipeline folder (``unet``, ``transformer``).
        seed: Seed of a preset's random weights.

    Raises:
        UnknownModelError: neither a preset nor an existing folder.
        UnsupportedModelError: the folder holds another model class.
        CheckpointError: the folder's config or weights cannot be read.
    """
    if str(name) in PRESETS:
        cls, config = PRESETS[str(name)]
        with seeded(seed):
            return cls(**config).eval()
    folder = Path(name) / (subfolder or "")
    if not (folder / "config.json").is_file():
        raise UnknownModelError(
            f"{name!s} is neither a preset ({', '.join(PRESETS)}) nor a diffusers model folder with config.json"
            + (f" in {subfolder}/" if subfolder else " (for a pipeline folder pass --subfolder unet)")
        )
    try:
        class_name = json.loads((folder / "config.json").read_text()).get("_class_name")
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read {folder / 'config.json'}: {error}") from None
    if class_name not in _CLASSES:
        raise UnsupportedModelError(f"{folder} holds a {class_name}; supported: {', '.join(_CLASSES)}")
    try:
        return _CLASSES[class_name].from_pretrained(str(folder), local_files_only=True).eval()
    except (OSError, ValueError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot load {folder}: {first}") from None
