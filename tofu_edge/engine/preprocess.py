"""timm's evaluation preprocessing in numpy and Pillow only (no torch), for running engines on a device.

Resize (shorter side to ``floor(size / crop_pct)``, or both sides for a non-square input), centre crop, scale to
[0, 1], normalize with ``mean``/``std``: the same steps, in the same order and with the same rounding, as
``timm.data.create_transform(..., is_training=False)`` with ``crop_mode="center"``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tofu_edge.errors import InputShapeError, TofuError
from tofu_edge.image_file import read_rgb

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PreprocessConfig",
    "preprocess_image",
    "load_input",
    "softmax",
    "top_k",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875  # timm's DEFAULT_CROP_PCT
_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}  # PIL's codes


@dataclass(frozen=True)
class PreprocessConfig:
    """How images are turned into the engine's input.

    Attributes:
        mean: Per-channel mean (RGB) subtracted after scaling to [0, 1].
        std: Per-channel standard deviation (RGB).
        crop_pct: Centre-crop fraction: the image is first resized to ``floor(size / crop_pct)``.
        interpolation: ``"bicubic"``, ``"bilinear"``, ``"nearest"``, ``"lanczos"``, ``"box"`` or ``"hamming"``.
        source: Where these values came from (ONNX metadata, timm's pretrained config, or the ImageNet default).
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = DEFAULT_CROP_PCT
    interpolation: str = "bicubic"
    source: str = "ImageNet default"

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise TofuError(f"preprocessing needs 3 means and 3 positive stds, got mean={self.mean} std={self.std}")
        if not 0 < self.crop_pct <= 1:
            raise TofuError(f"preprocessing crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation not in _RESAMPLE:
            raise TofuError(f"unknown interpolation {self.interpolation!r}; choose one of {', '.join(_RESAMPLE)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """From a sidecar's ``preprocess`` entry (missing keys keep their defaults)."""
        known = {k: data[k] for k in ("mean", "std", "crop_pct", "interpolation", "source") if k in data}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists)."""
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data


def preprocess_image(image: Any, size: tuple[int, int], config: PreprocessConfig | None = None) -> np.ndarray:
    """One PIL image as the engine's normalized input.

    Args:
        image: A ``PIL.Image.Image`` (any mode; converted to RGB).
        size: ``(H, W)`` of the engine's input.
        config: Normalization and crop; ``None`` is the ImageNet default.

    Returns:
        A contiguous float32 array.

    Shapes:
        returns: [1, 3, H, W]
    """
    config = config or PreprocessConfig()
    height, width = size
    image = image.convert("RGB")
    resample = _RESAMPLE[config.interpolation]
    scale_h, scale_w = math.floor(height / config.crop_pct), math.floor(width / config.crop_pct)
    old_w, old_h = image.size
    if scale_h == scale_w:  # timm (torchvision Resize): shorter side to the scale size, the other truncated
        short, long = min(old_w, old_h), max(old_w, old_h)
        new_long = int(scale_h * long / short)
        new_size = (scale_h, new_long) if old_w <= old_h else (new_long, scale_h)
    else:  # timm's ResizeKeepRatio: the smaller ratio wins, both sides rounded
        ratio = min(old_h / scale_h, old_w / scale_w)
        new_size = (round(old_w / ratio), round(old_h / ratio))
    if new_size != image.size:
        image = image.resize(new_size, resample)
    left = int(round((image.size[0] - width) / 2.0))
    top = int(round((image.size[1] - height) / 2.0))
    image = image.crop((left, top, left + width, top + height))
    pixels = np.asarray(image, dtype=np.float32) / 255.0  # [H, W, 3]
    mean = np.asarray(config.mean, dtype=np.float32)
    std = np.asarray(config.std, dtype=np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1)[None])


def load_input(path: str | Path, shape: tuple[int, ...], config: PreprocessConfig | None = None) -> np.ndarray:
    """An image file preprocessed for an engine input of ``shape``, or a ``.npy`` tensor used as it is.

    Raises:
        TofuError: the file is missing, is not an image Pillow can read, is damaged or too large.
        InputShapeError: a ``.npy`` tensor does not have the engine's ``[C, H, W]``.

    Shapes:
        shape: [B, 3, H, W] (the engine input; B may be -1 for a dynamic batch)
        returns: [1, 3, H, W], or the ``.npy`` tensor's own [B, 3, H, W]
    """
    path = Path(path)
    if not path.is_file():
        raise TofuError(f"input file {path} does not exist")
    if path.suffix.lower() == ".npy":
        tensor = np.load(path, allow_pickle=False)
        tensor = tensor[None] if tensor.ndim == len(shape) - 1 else tensor
        if tuple(tensor.shape[1:]) != tuple(shape[1:]):
            raise InputShapeError(
                f"{path}: tensor of shape {list(tensor.shape)} does not fit the engine input {list(shape)}"
            )
        return np.ascontiguousarray(tensor, dtype=np.float32)
    if len(shape) != 4 or shape[1] != 3:
        raise InputShapeError(f"the engine input {list(shape)} is not an RGB image batch [B, 3, H, W]")
    return preprocess_image(read_rgb(path), (int(shape[2]), int(shape[3])), config)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 (stable for fp16 logits).

    Shapes:
        logits: [..., K]
        returns: [..., K]
    """
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` most probable classes of one logit vector as ``(index, probability)``, best first.

    Ties go to the lower index (a stable sort), so the order is the same on every backend.

    Shapes:
        logits: [K]
    """
    probabilities = softmax(np.asarray(logits).reshape(-1))
    order = np.argsort(-probabilities, kind="stable")[: max(0, min(k, probabilities.size))]
    return [(int(i), float(probabilities[i])) for i in order]
