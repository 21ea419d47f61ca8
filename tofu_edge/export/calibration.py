"""INT8 calibration images: which ones (a folder, arrays, or the bundled photos), and the reader that feeds them.

Calibration images get timm's evaluation preprocessing for the model and are fed through onnxruntime's
``CalibrationDataReader``; by default they are the ImageNet photos bundled with ``foolbox`` that the parity check
does not use.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader

from tofu_edge.batches import pad_batch
from tofu_edge.errors import ConfigError
from tofu_edge.export.quantize import Int8Config
from tofu_edge.image_file import IMAGE_SUFFIXES, image_files
from tofu_edge.images import bundled_photo_folder, data_config, load_image
from tofu_edge.models import input_shape

__all__ = ["Int8CalibrationSet", "CalibrationReader", "calibration_images"]

CALIBRATION_SEED = 0
DYNAMIC_CALIBRATION_BATCH = 8  # images per calibration call when the batch axis is dynamic

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Int8CalibrationSet:
    """The images that set an INT8 model's activation ranges: files or preprocessed arrays, and where they came from.

    (Not `tofu_edge.calibrate`'s calibration, which chooses the fusion schedule on the user's images.)
    """

    source: str
    files: tuple[Path, ...] = ()
    arrays: np.ndarray | None = field(default=None, compare=False, repr=False)
    asked: int = 0

    @property
    def count(self) -> int:
        return len(self.files) if self.arrays is None else len(self.arrays)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "images": self.count, "asked": self.asked, "method": "minmax"}


def calibration_images(config: Int8Config, module: torch.nn.Module, bundled_skip: int) -> Int8CalibrationSet | None:
    """The calibration set of ``config`` for ``module`` (checked before any slow work), ``None`` if not calibrated.

    Args:
        config: The INT8 config.
        module: The model (its input shape and preprocessing).
        bundled_skip: How many of the bundled photos (sorted) the parity check uses; calibration skips them.

    Raises:
        ConfigError: the folder is missing or has no images, arrays of the wrong shape, or no default images.
    """
    if not config.recipe.calibrated:
        return None
    shape = input_shape(module)
    if config.calibration_data is not None:
        arrays = np.asarray(config.calibration_data, dtype=np.float32)
        if tuple(arrays.shape[1:]) != shape or len(arrays) == 0:
            raise ConfigError(f"calibration data must be [N, {', '.join(map(str, shape))}], got {list(arrays.shape)}")
        chosen = _draw(list(range(len(arrays))), config.count)
        return Int8CalibrationSet("arrays", arrays=arrays[chosen], asked=config.count)
    if config.calibration_images is not None:
        folder = config.calibration_images
        if not folder.is_dir():
            raise ConfigError(f"calibration folder {folder} does not exist; give a folder of images")
        files = image_files(folder.rglob("*"))
        if not files:
            raise ConfigError(f"calibration folder {folder} has no {'/'.join(IMAGE_SUFFIXES)} files")
        return Int8CalibrationSet(str(folder), files=tuple(_draw(files, config.count)), asked=config.count)
    bundled = bundled_photo_folder()
    if bundled is None:
        raise ConfigError("INT8 calibration needs images: pass --calibration-images DIR (or pip install foolbox)")
    files = sorted(bundled.glob("imagenet_*"))[bundled_skip:]
    source = f"foolbox's ImageNet photos ({len(files)} not used by the parity check)"
    return Int8CalibrationSet(source, files=tuple(_draw(files, config.count)), asked=config.count)


class CalibrationReader(CalibrationDataReader):
    """Feeds the calibration images to onnxruntime's calibrator in the graph's batch, loading files lazily.

    Shapes:
        each batch: [batch, C, H, W] float32 (a short last batch is padded by repeating its last image)
    """

    def __init__(
        self,
        calibration: Int8CalibrationSet,
        module: torch.nn.Module,
        model: onnx.ModelProto,
        batch: int | None,
        progress: Progress | None = None,
    ) -> None:
        self.calibration = calibration
        self.input_name = model.graph.input[0].name
        self.batch = batch or DYNAMIC_CALIBRATION_BATCH
        self.pad = batch is not None
        self.progress = progress
        self.transform = None
        if calibration.arrays is None:
            from timm.data import create_transform

            self.transform = create_transform(**data_config(module))
        self.rewind()

    def rewind(self) -> None:
        self._batches = self._iterate()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def __len__(self) -> int:
        return -(-self.calibration.count // self.batch)

    def _iterate(self) -> Iterator[dict[str, np.ndarray]]:
        total = self.calibration.count
        for start in range(0, total, self.batch):
            stop = min(start + self.batch, total)
            if self.calibration.arrays is not None:
                images = self.calibration.arrays[start:stop]
            else:
                files = self.calibration.files[start:stop]
                images = torch.stack([load_image(f, self.transform) for f in files]).numpy()
            if self.pad and len(images) < self.batch:
                images = pad_batch(images, self.batch)
            if self.progress is not None:
                self.progress(stop, total)
            yield {self.input_name: np.ascontiguousarray(images, dtype=np.float32)}


def _draw(items: list, count: int) -> list:
    """A seeded random draw of at most ``count`` items, in their original order."""
    if len(items) <= count:
        return list(items)
    chosen = sorted(random.Random(CALIBRATION_SEED).sample(range(len(items)), count))
    return [items[i] for i in chosen]
