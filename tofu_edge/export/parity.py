"""Parity of an exported model against the fused PyTorch model it came from, and the image sets it is judged on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tofu_edge.batches import run_in_batches
from tofu_edge.errors import ConfigError, ParityError
from tofu_edge.images import bundled_photo_folder, flat_images, photo_images, random_images
from tofu_edge.models import input_shape

__all__ = [
    "ParityTolerance",
    "SetParity",
    "ParityReport",
    "compare_outputs",
    "check_parity",
    "parity_image_sets",
    "PHOTO_PARITY_IMAGES",
]

RANDOM_PARITY_IMAGES = 4
PHOTO_PARITY_IMAGES = 8  # the first of the bundled photos (sorted): INT8 calibration skips them


@dataclass(frozen=True)
class ParityTolerance:
    """What an export must reach on every image set.

    Args:
        min_cosine: Lowest cosine between the two output vectors of any single image.
        min_top1_agreement: Lowest fraction of images whose top-1 class agrees.
    """

    min_cosine: float = 0.999
    min_top1_agreement: float = 0.9

    def __post_init__(self) -> None:
        for name in ("min_cosine", "min_top1_agreement"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class SetParity:
    """Agreement of two backends on one image set (``max_abs`` is reported, the others are judged)."""

    name: str
    images: int
    max_abs: float
    min_cosine: float
    mean_cosine: float
    top1_agreement: float

    def failures(self, tolerance: ParityTolerance) -> list[str]:
        """What is out of tolerance, in words."""
        found = []
        if self.min_cosine < tolerance.min_cosine:
            found.append(f"{self.name}: cosine {self.min_cosine:.5f} < {tolerance.min_cosine}")
        if self.top1_agreement < tolerance.min_top1_agreement:
            found.append(f"{self.name}: top-1 agreement {self.top1_agreement:.2f} < {tolerance.min_top1_agreement}")
        return found


@dataclass(frozen=True)
class ParityReport:
    """Parity over all image sets, and whether it passed."""

    sets: tuple[SetParity, ...]
    tolerance: ParityTolerance

    @property
    def failures(self) -> list[str]:
        return [failure for s in self.sets for failure in s.failures(self.tolerance)]

    @property
    def passed(self) -> bool:
        return not self.failures

    def raise_if_failed(self, what: str) -> None:
        """Raises: ParityError naming every figure out of tolerance."""
        if not self.passed:
            raise ParityError(f"{what} parity out of tolerance: " + "; ".join(self.failures))

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "tolerance": asdict(self.tolerance),
            "sets": [asdict(s) for s in self.sets],
        }


def compare_outputs(name: str, got: np.ndarray, want: np.ndarray) -> SetParity:
    """Max abs difference, per-image cosine and top-1 agreement of two output batches.

    Shapes:
        got: [B, K]
        want: [B, K]
    """
    got, want = got.reshape(len(got), -1).astype(np.float64), want.reshape(len(want), -1).astype(np.float64)
    norms = np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1), 1e-30)
    cosine = (got * want).sum(axis=1) / norms
    return SetParity(
        name=name,
        images=len(got),
        max_abs=float(np.abs(got - want).max()),
        min_cosine=float(cosine.min()),
        mean_cosine=float(cosine.mean()),
        top1_agreement=float((got.argmax(axis=1) == want.argmax(axis=1)).mean()),
    )


def check_parity(
    run: Callable[[np.ndarray], np.ndarray],
    model: torch.nn.Module,
    image_sets: dict[str, torch.Tensor],
    batch: int | None,
    tolerance: ParityTolerance | None = None,
) -> ParityReport:
    """Run every image set through ``run`` (e.g. an onnxruntime session) and through ``model``.

    Args:
        run: Maps an image batch to outputs.
        model: The PyTorch reference.
        image_sets: Named image batches.
        batch: The static batch ``run`` needs (chunks are padded by repeating the last image), or ``None``.
        tolerance: Pass criteria; the defaults of `ParityTolerance` when ``None``.

    Shapes:
        image_sets values: [n, 3, H, W]
    """
    sets = []
    for name, images in image_sets.items():
        with torch.no_grad():
            want = model(images).numpy()
        got = run_in_batches(run, images.numpy(), batch)
        sets.append(compare_outputs(name, got, want))
    return ParityReport(sets=tuple(sets), tolerance=tolerance or ParityTolerance())


def parity_image_sets(module: torch.nn.Module, parity_images: str | Path | None) -> dict[str, torch.Tensor]:
    """The image sets an export is judged on: random inputs, flat single-colour images and photographs
    (``parity_images``, or the ImageNet samples of the ``foolbox`` package when it is installed, else none).

    Shapes:
        values: [n, C, H, W], the model's input size
    """
    shape = input_shape(module)
    sets = {"random": random_images(RANDOM_PARITY_IMAGES, shape), "flat": flat_images(module)}
    if parity_images is not None:
        sets["photos"] = photo_images(module, Path(parity_images), limit=PHOTO_PARITY_IMAGES)
    elif (bundled := bundled_photo_folder()) is not None:
        sets["photos"] = photo_images(module, bundled, limit=PHOTO_PARITY_IMAGES, pattern="imagenet_*")
    return sets
