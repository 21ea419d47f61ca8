"""Image folders to evaluate on: an ImageFolder tree (class subfolders sorted by name give the labels) or a flat
folder of unlabelled photos, and image loading with one-line errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from tofu_edge.errors import ConfigError, TofuError
from tofu_edge.image_file import IMAGE_SUFFIXES, image_files
from tofu_edge.images import load_image

__all__ = ["ImageFolderSet", "find_images", "image_batches", "UNLABELLED"]


UNLABELLED = -1  # the label of every image of a flat folder


@dataclass(frozen=True)
class ImageFolderSet:
    """The images of a folder and their labels.

    An ImageFolder tree is read as ``torchvision.datasets.ImageFolder`` reads it: class subfolders sorted by name
    give the class indices 0, 1, ...; with ``numeric_labels`` the folder names are the model's class indices
    themselves (e.g. ``0/``, ``207/`` for a subset of ImageNet's classes). A flat folder of photos (images and no
    subfolders) is unlabelled: no classes, and every label is `UNLABELLED`.

    Args:
        root: The dataset folder.
        classes: Class folder names, sorted; empty for a flat folder.
        samples: (image file, label) pairs, class by class, files sorted by name.
    """

    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labelled(self) -> bool:
        """Whether the images have class labels (an ImageFolder tree) or not (a flat folder)."""
        return bool(self.classes)


def find_images(root: str | Path, *, limit: int | None = None, numeric_labels: bool = False) -> ImageFolderSet:
    """List the images of an ImageFolder tree (``root/<class>/<image>``) or a flat folder, without reading them.

    Args:
        root: The dataset folder: class subfolders, or (unlabelled) image files and no subfolders.
        limit: Keep at most this many images, spread evenly over the whole sorted list (every class stays in).
        numeric_labels: Folder names are class indices (``"207"`` is class 207) instead of their sorted rank.

    Raises:
        TofuError: the folder is missing or holds no images.
        ConfigError: ``limit`` < 1, or a folder name is not an int with ``numeric_labels``.
    """
    root = Path(root)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if not root.is_dir():
        raise TofuError(f"dataset folder {root} does not exist")
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not classes:
        samples = [(file, UNLABELLED) for file in image_files(root.iterdir())]
        if not samples:
            raise TofuError(
                f"dataset folder {root} holds no {'/'.join(IMAGE_SUFFIXES)} files "
                f"(give a flat folder of photos, or class subfolders: {root}/<class>/<image>)"
            )
        return ImageFolderSet(root=root, classes=(), samples=tuple(_spread(samples, limit)))
    samples = []
    for index, name in enumerate(classes):
        label = _label(name, root) if numeric_labels else index
        samples += [(file, label) for file in image_files(_walk(root / name, root))]
    if not samples:
        raise TofuError(f"dataset folder {root} has no {'/'.join(IMAGE_SUFFIXES)} files in its class subfolders")
    return ImageFolderSet(root=root, classes=classes, samples=tuple(_spread(samples, limit)))


def _walk(folder: Path, root: Path) -> Iterator[Path]:
    """Every path under ``folder``, following linked folders (a class folder of links is common) but entering each
    real folder once, and never the dataset ``root`` or a folder above it: a symlink loop ends here."""
    above = {root.resolve(), *root.resolve().parents}
    entered = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        real = current.resolve()
        if real in entered or real in above:
            continue
        entered.add(real)
        try:
            children = list(current.iterdir())
        except OSError:  # unreadable, or a link to nowhere
            continue
        for child in children:
            if child.name.startswith("."):
                continue
            yield child
            if child.is_dir():
                stack.append(child)


def _spread(samples: list[tuple[Path, int]], limit: int | None) -> list[tuple[Path, int]]:
    """At most ``limit`` samples, spread evenly over the whole sorted list."""
    if limit is None or limit >= len(samples):
        return samples
    step = len(samples) / limit
    return [samples[int(i * step)] for i in range(limit)]


def image_batches(
    dataset: ImageFolderSet, transform: Callable, batch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Preprocessed images and labels, ``batch`` at a time (the last batch may be smaller).

    Raises:
        TofuError: an image cannot be read (names the file).

    Shapes:
        yields: [b, 3, H, W], [b] (int64)
    """
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    for start in range(0, len(dataset.samples), batch):
        chunk = dataset.samples[start : start + batch]
        images = torch.stack([load_image(path, transform) for path, _ in chunk])
        yield images, torch.tensor([label for _, label in chunk], dtype=torch.int64)


def _label(name: str, root: Path) -> int:
    try:
        label = int(name)
    except ValueError:
        label = -1
    if label < 0:
        raise ConfigError(f"--numeric-labels: class folder {root / name} is not a class index (a non-negative int)")
    return label
