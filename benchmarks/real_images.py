"""Real photographs available offline, from packages already installed: 31 when all four are present.

Sources (each optional; missing packages or files are skipped):
  - ``foolbox`` (dev extra): the 20 ImageNet validation photos in its ``data`` folder (``imagenet_*.jpg``).
  - ``scikit-image``: 8 photographs from ``skimage.data`` (astronaut, chelsea, coffee, rocket, motorcycle,
    hubble_deep_field, and the grey camera and coins, replicated to RGB); its synthetic, binary, microscopy
    and texture images are left out.
  - ``scikit-learn``: ``load_sample_images()`` (china, flower).
  - ``matplotlib``: the sample photo ``grace_hopper.jpg``.

Order is fixed (the source order above, then by name), and the split into calibration and held-out photos is
a fixed list of names (`CALIBRATION`), so adding a source never moves a photo from one split to the other.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

__all__ = [
    "CALIBRATION",
    "SPLITS",
    "photo_files",
    "load_photos",
    "preprocess",
    "photo_tensors",
    "VIEWS",
    "photo_views",
]

SKIMAGE_PHOTOS = {
    "astronaut": "astronaut.png",
    "camera": "camera.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "motorcycle": "motorcycle_left.png",
    "rocket": "rocket.jpg",
}
# 15 calibration photos; every other photo is held out (16 when all sources are present)
CALIBRATION = (
    *(
        f"foolbox/{stem}"
        for stem in (
            "imagenet_00_243",
            "imagenet_01_559",
            "imagenet_02_438",
            "imagenet_03_990",
            "imagenet_04_949",
            "imagenet_05_853",
            "imagenet_06_609",
            "imagenet_07_609",
            "imagenet_08_915",
            "imagenet_09_455",
        )
    ),
    "skimage/astronaut",
    "skimage/camera",
    "skimage/coffee",
    "skimage/rocket",
    "sklearn/china",
)
SPLITS = ("all", "calibration", "held_out")


def photo_files(split: str = "all") -> list[tuple[str, Path]]:
    """Names and files of the photographs whose packages are installed, in a fixed order.

    Args:
        split: ``all``, ``calibration`` (names in `CALIBRATION`) or ``held_out`` (the others).

    Raises:
        ValueError: unknown split.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    files = [photo for source in _SOURCES for photo in source()]
    if split == "all":
        return files
    keep = split == "calibration"
    return [(name, path) for name, path in files if (name in CALIBRATION) == keep]


def load_photos(split: str = "all") -> list[tuple[str, Image.Image]]:
    """The photographs as RGB PIL images (grey ones replicated to three channels), in `photo_files` order."""
    photos = []
    for name, path in photo_files(split):
        with Image.open(path) as image:
            photos.append((name, image.convert("RGB")))
    return photos


def preprocess(model: torch.nn.Module, photos: list[tuple[str, Image.Image]]) -> torch.Tensor:
    """timm's evaluation preprocessing for ``model`` at the input size it was built for.

    Uses ``resolve_data_config`` (mean, std, interpolation, crop from the model's ``pretrained_cfg``) and
    ``create_transform``.

    Shapes:
        returns: [len(photos), 3, H, W] float32, H x W the model's input size
    """
    from timm.data import create_transform

    from tofu_edge.images import data_config

    transform = create_transform(**data_config(model))
    if not photos:
        height, width = model.patch_embed.img_size
        return torch.empty(0, 3, height, width)
    return torch.stack([transform(image) for _, image in photos])


def photo_tensors(
    model: torch.nn.Module, split: str = "all", limit: int | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Preprocessed photographs of one split for ``model``, and their names.

    Shapes:
        returns: ([min(limit, photos), 3, H, W] float32, names)
    """
    photos = load_photos(split)[:limit]
    return preprocess(model, photos), [name for name, _ in photos]


# The views of one photo: a square crop (side as a fraction of the shorter side, anchored at a relative position),
# resized to the model's input, plain and mirrored. 2 + 6 + 2 = 10 views per photo.
VIEWS = tuple(
    (fraction, anchor, flip)
    for fraction, anchors in ((1.0, ((0.5, 0.5),)), (0.8, ((0.5, 0.5), (0.0, 0.0), (1.0, 1.0))),
                              (0.6, ((0.5, 0.5),)))
    for anchor in anchors
    for flip in (False, True)
)  # fmt: skip


def photo_views(model: torch.nn.Module, split: str = "all") -> tuple[torch.Tensor, list[str]]:
    """Every photo of a split as `VIEWS` (crops at three scales and positions, plain and mirrored), normalised as
    the model expects, and the source photo of each view (so that statistics can be paired and clustered by photo).

    Shapes:
        returns: ([10 * photos, 3, H, W] float32, names)
    """
    from torchvision.transforms import functional as TF

    from tofu_edge.images import data_config

    config = data_config(model)
    height, width = model.patch_embed.img_size
    views, names = [], []
    for name, image in load_photos(split):
        side = min(image.size)
        for fraction, (ax, ay), flip in VIEWS:
            crop = round(side * fraction)
            left, top = round((image.width - crop) * ax), round((image.height - crop) * ay)
            view = image.crop((left, top, left + crop, top + crop)).resize((width, height), Image.BICUBIC)
            tensor = TF.normalize(TF.to_tensor(view), config["mean"], config["std"])
            views.append(tensor.flip(-1) if flip else tensor)
            names.append(name)
    return torch.stack(views), names


def _foolbox() -> list[tuple[str, Path]]:
    from tofu_edge.images import bundled_photo_folder

    folder = bundled_photo_folder()
    return [(f"foolbox/{p.stem}", p) for p in sorted(folder.glob("imagenet_*.jpg"))] if folder else []


def _skimage() -> list[tuple[str, Path]]:
    if importlib.util.find_spec("skimage") is None:
        return []
    import skimage.data

    folder = Path(skimage.data.data_dir)
    return [
        (f"skimage/{name}", folder / file) for name, file in sorted(SKIMAGE_PHOTOS.items()) if (folder / file).is_file()
    ]


def _sklearn() -> list[tuple[str, Path]]:
    if importlib.util.find_spec("sklearn") is None:
        return []
    from sklearn.datasets import load_sample_images

    files = sorted(Path(name) for name in load_sample_images().filenames)
    return [(f"sklearn/{p.stem}", p) for p in files if p.is_file()]


def _matplotlib() -> list[tuple[str, Path]]:
    if importlib.util.find_spec("matplotlib") is None:
        return []
    from matplotlib import cbook

    try:
        path = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except (OSError, ValueError):  # a matplotlib build without its sample data
        return []
    return [("matplotlib/grace_hopper", path)] if path.is_file() else []


_SOURCES: tuple[Callable[[], list[tuple[str, Path]]], ...] = (_foolbox, _skimage, _sklearn, _matplotlib)
