"""Image sets for checks: random tensors, flat single-colour images, and real photographs."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
from timm.data import create_transform, resolve_data_config

from tofu_edge.errors import TofuError
from tofu_edge.image_file import IMAGE_SUFFIXES, image_files, read_rgb
from tofu_edge.models import input_shape

__all__ = [
    "data_config",
    "random_images",
    "flat_images",
    "photo_images",
    "load_image",
    "bundled_photo_folder",
    "IMAGE_SUFFIXES",
]

FLAT_COLOURS = ((0, 0, 0), (255, 255, 255), (128, 128, 128), (200, 40, 40))


def data_config(model: torch.nn.Module) -> dict:
    """timm's evaluation preprocessing for ``model`` at the input size it was built for."""
    return resolve_data_config({"input_size": input_shape(model)}, model=model)


def random_images(count: int, shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """Standard-normal tensors in the model's normalized input space.

    Shapes:
        returns: [count, *shape]
    """
    return torch.randn(count, *shape, generator=torch.Generator().manual_seed(seed))


def flat_images(model: torch.nn.Module) -> torch.Tensor:
    """Single-colour images (black, white, grey, red) normalized as the model expects: every patch alike,
    so matching scores tie everywhere but for the position embeddings.

    Shapes:
        returns: [4, 3, H, W]
    """
    config = data_config(model)
    mean = torch.tensor(config["mean"])[:, None, None]
    std = torch.tensor(config["std"])[:, None, None]
    height, width = config["input_size"][1:]
    colours = torch.tensor(FLAT_COLOURS, dtype=torch.float32)[:, :, None, None] / 255.0
    return ((colours - mean) / std).expand(-1, -1, height, width).contiguous()


def bundled_photo_folder() -> Path | None:
    """The ImageNet validation photographs that the ``foolbox`` package ships, if it is installed."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "data"
    return folder if any(folder.glob("imagenet_*.jpg")) else None


def photo_images(model: torch.nn.Module, folder: Path, limit: int = 8, pattern: str = "*") -> torch.Tensor:
    """Photographs from ``folder`` with timm's evaluation preprocessing for ``model``.

    Raises:
        TofuError: the folder is missing, has no images, or an image cannot be read.

    Shapes:
        returns: [min(limit, files), 3, H, W]
    """
    if not folder.is_dir():
        raise TofuError(f"image folder {folder} does not exist")
    files = image_files(folder.glob(pattern))[:limit]
    if not files:
        raise TofuError(f"image folder {folder} has no {'/'.join(IMAGE_SUFFIXES)} files")
    transform = create_transform(**data_config(model))
    return torch.stack([load_image(file, transform) for file in files])


def load_image(path: str | Path, transform: Callable) -> torch.Tensor:
    """Read an image file as 8-bit RGB, upright (`tofu_edge.image_file.read_rgb`), and apply ``transform``
    (timm's evaluation preprocessing).

    Raises:
        TofuError: the file is missing, is not an image Pillow can read, is damaged or too large; the message
            names the file.

    Shapes:
        returns: [3, H, W]
    """
    return transform(read_rgb(path))
