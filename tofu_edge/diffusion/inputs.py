"""The static inputs of one denoising step for each supported model family, and seeded examples of them."""

from __future__ import annotations

import torch

from tofu_edge.diffusion.family import Family, family_of
from tofu_edge.errors import UnsupportedModelError

__all__ = ["input_family", "example_inputs", "input_ranges", "call_step", "DEFAULT_ENCODER_LENGTH", "TRAIN_TIMESTEPS"]

TRAIN_TIMESTEPS = 1000  # the schedulers' num_train_timesteps of every supported family: timesteps are 0..999
DEFAULT_ENCODER_LENGTH = {Family.UNET: 77, Family.PIXART: 120}  # CLIP's and PixArt's T5 prompt lengths
_UNET_EXTRAS = ("class_embed_type", "addition_embed_type", "encoder_hid_dim_type", "time_cond_proj_dim")


def input_family(model: torch.nn.Module) -> Family:
    """The model's `Family`: which inputs one step of ``model`` takes.

    Raises:
        UnsupportedModelError: a model with conditioning inputs the exporter does not feed (class embeddings,
            SDXL's added conditions, PixArt's resolution conditions).
    """
    family = family_of(model)
    if family is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} cannot be exported; tofu_edge.diffusion exports UNet2DConditionModel, "
            "DiTTransformer2DModel and PixArtTransformer2DModel"
        )
    if family is Family.UNET:
        extras = [name for name in _UNET_EXTRAS if getattr(model.config, name, None) is not None]
        if extras or not isinstance(model.config.cross_attention_dim, int):
            raise UnsupportedModelError(
                f"export takes UNets conditioned on timestep and encoder_hidden_states only; this one sets "
                f"{', '.join(extras) or 'a per-block cross_attention_dim'}"
            )
    if family is Family.PIXART and model.config.use_additional_conditions:
        raise UnsupportedModelError("export takes PixArt models without resolution/aspect-ratio conditions only")
    return family


def example_inputs(
    model: torch.nn.Module,
    family: Family,
    size: tuple[int, int],
    batch: int,
    encoder_length: int | None,
    seed: int,
    flat: bool = False,
) -> dict[str, torch.Tensor]:
    """Seeded inputs of one step, by name (``flat``: a constant latent, which ties every token match).

    Shapes:
        returns: latent [B, C, H, W] float32, timestep [B] float32, then encoder_hidden_states [B, L, D] float32
            (UNet, PixArt) or class_labels [B] int64 (DiT)
    """
    generator = torch.Generator().manual_seed(seed)
    channels = model.config.in_channels
    latent = torch.randn(batch, channels, *size, generator=generator)
    if flat:
        latent = torch.full_like(latent, 0.5)
    timestep = torch.randint(0, TRAIN_TIMESTEPS, (batch,), generator=generator).to(torch.float32)
    name = "sample" if family is Family.UNET else "hidden_states"
    feed = {name: latent, "timestep": timestep}
    if family is Family.DIT:
        feed["class_labels"] = torch.randint(0, model.config.num_embeds_ada_norm, (batch,), generator=generator)
        return feed
    length = encoder_length or DEFAULT_ENCODER_LENGTH[family]
    width = model.config.cross_attention_dim if family is Family.UNET else model.config.caption_channels
    feed["encoder_hidden_states"] = torch.randn(batch, length, width, generator=generator)
    return feed


def input_ranges(model: torch.nn.Module, family: Family) -> dict[str, list[int]]:
    """The half-open ``[low, high)`` integer ranges of the inputs that are step numbers or indices, by name: what a
    file's reader (``tofu-edge bench``) draws them from, as `example_inputs` does."""
    ranges = {"timestep": [0, TRAIN_TIMESTEPS]}
    if family is Family.DIT:
        ranges["class_labels"] = [0, int(model.config.num_embeds_ada_norm)]
    return ranges


def call_step(model: torch.nn.Module, family: Family, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """One denoising step of ``model`` on positional inputs in `example_inputs`' order, as the exporter traces it.

    Shapes:
        inputs: latent [B, C, H, W], timestep [B], then encoder_hidden_states [B, L, D] or class_labels [B]
        returns: [B, C_out, H, W] the model's prediction
    """
    sample, timestep, condition = inputs
    if family is Family.UNET:
        return model(sample, timestep, encoder_hidden_states=condition, return_dict=False)[0]
    if family is Family.DIT:
        return model(sample, timestep=timestep, class_labels=condition, return_dict=False)[0]
    conditions = {"resolution": None, "aspect_ratio": None}
    return model(
        sample, encoder_hidden_states=condition, timestep=timestep, added_cond_kwargs=conditions, return_dict=False
    )[0]
