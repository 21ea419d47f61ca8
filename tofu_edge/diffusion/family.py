"""`Family`: the diffusion model families `tofu_edge.diffusion` fuses and exports, a closed choice, and the family of
a model. What differs between families (block norms, step inputs, how a step is called) is keyed by it."""

from __future__ import annotations

import torch
from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel, UNet2DConditionModel

from tofu_edge.choices import _Choice

__all__ = ["Family", "family_of"]


class Family(_Choice):
    """A diffusers model family: a UNet (SD 1.x/2.x), DiT or PixArt-alpha."""

    UNET = "unet"
    DIT = "dit"
    PIXART = "pixart"

    @property
    def model_class(self) -> type[torch.nn.Module]:
        """The diffusers class of the family's denoiser."""
        return _CLASSES[self]


_CLASSES = {
    Family.UNET: UNet2DConditionModel,
    Family.DIT: DiTTransformer2DModel,
    Family.PIXART: PixArtTransformer2DModel,
}


def family_of(model: torch.nn.Module) -> Family | None:
    """The family whose class ``model`` is an instance of (``None``: none of them; callers say what they support)."""
    return next((family for family, cls in _CLASSES.items() if isinstance(model, cls)), None)
