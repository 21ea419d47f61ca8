"""The photos `tofu-edge tune` measures fidelity on: a flat folder, an ImageFolder tree, or foolbox's samples.

Unreadable files are skipped with a count (a folder copied off a camera card often holds a few); only a folder with
no usable image at all is an error.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tofu_edge.errors import ConfigError, TofuError

__all__ = ["tuning_images"]


def tuning_images(
    model: torch.nn.Module, folder: Path | None, limit: int
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """The images of a flat or ImageFolder folder (``None``: the ImageNet photos ``foolbox`` ships), preprocessed
    for the model, their labels (``None`` when unlabelled), and how many files could not be read.

    Raises:
        TofuError: the folder is missing or holds no image that can be read.

    Shapes:
        returns: [N, 3, H, W], [N]
    """
    from timm.data import create_transform

    from tofu_edge.images import bundled_photo_folder, data_config, load_image, photo_images
    from tofu_edge.measure.dataset import find_images

    if limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if folder is None:
        bundled = bundled_photo_folder()
        if bundled is None:
            raise TofuError("give a folder of photos to tune on (or install foolbox for its ImageNet samples)")
        return photo_images(model, bundled, limit=limit, pattern="imagenet_*"), None, 0
    dataset = find_images(folder, limit=limit)
    transform = create_transform(**data_config(model))
    images, labels, unreadable = [], [], []
    for path, label in dataset.samples:
        try:
            images.append(load_image(path, transform))
        except TofuError as error:
            unreadable.append(str(error))
            continue
        labels.append(label)
    if not images:
        raise TofuError(f"{folder} holds no image that can be read ({len(unreadable)} files tried; {unreadable[0]})")
    return torch.stack(images), torch.tensor(labels) if dataset.labelled else None, len(unreadable)
