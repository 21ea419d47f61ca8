"""Create timm models by name with one-line errors for names or options that do not exist."""

from __future__ import annotations

import difflib

import timm
import torch

from tofu_edge.errors import ConfigError, TofuError, UnknownModelError

__all__ = ["create_model", "input_shape"]


def create_model(name: str, *, img_size: int | None = None, pretrained: bool = False, **kwargs) -> torch.nn.Module:
    """A timm model in eval mode.

    Args:
        name: timm model name, e.g. ``deit_small_patch16_224``.
        img_size: Square input size; ``None`` keeps the model's default.
        pretrained: Load timm's hub weights (needs a network).
        **kwargs: Passed to ``timm.create_model`` (e.g. ``depth`` for a smaller test model).

    Raises:
        UnknownModelError: no timm model has that name (the message suggests close names).
        ConfigError: timm rejects an option.
    """
    if not timm.is_model(name):
        names = timm.list_models()
        close = [n for n in names if n.startswith(name)][:3] or difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `timm.list_models()` lists them"
        raise UnknownModelError(f"unknown model {name!r}{hint}")
    if img_size is not None:
        kwargs["img_size"] = img_size
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except OSError as error:  # hub download: offline, missing file, no access
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TofuError(
            f"cannot fetch pretrained weights for {name} ({first_line}); "
            "without a network, pass a local file with --checkpoint"
        ) from None
    except (TypeError, ValueError, AssertionError) as error:
        raise ConfigError(f"timm cannot build {name} with {kwargs}: {error}") from None
    return model.eval()


def input_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    """``(channels, height, width)`` of one image that a timm ViT was built for (its patch embedding's).

    Shapes:
        returns: (C, H, W) of the model's input [B, C, H, W]
    """
    return (model.patch_embed.proj.in_channels, *model.patch_embed.img_size)
