"""What `export_onnx` starts from: the model created (seeded) or copied, its weights loaded and fingerprinted, fused on
the standard-op step, with the image sets it is judged on and its INT8 calibration set."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from tofu_edge.checkpoint import load_checkpoint
from tofu_edge.config import FusionConfig
from tofu_edge.export.calibration import Int8CalibrationSet, calibration_images
from tofu_edge.export.parity import PHOTO_PARITY_IMAGES, parity_image_sets
from tofu_edge.export.quantize import Int8Config
from tofu_edge.models import create_model
from tofu_edge.patch import fuse, use_step
from tofu_edge.weights import seeded, weights_fingerprint

__all__ = ["PreparedModel", "prepare_model"]


@dataclass(frozen=True)
class PreparedModel:
    """The fused model and everything the export judges it with, gathered before any tracing.

    Attributes:
        name: The timm name (of the fused architecture) or a model object's class name.
        module: The fused copy, on the standard-op step.
        reference: The unfused float model, for the INT8 report (``None`` without ``int8``).
        seed: The seed the weights were drawn with; ``None`` for loaded weights or a model object's.
        fingerprint: `weights_fingerprint` of the weights.
        image_sets: The parity image sets.
        calibration: The INT8 calibration images (``None`` without a calibrated recipe).
        example: The example batch traced.

    Shapes:
        example: [batch, C, H, W]
    """

    name: str
    module: torch.nn.Module
    reference: torch.nn.Module | None
    seed: int | None
    fingerprint: str
    image_sets: dict[str, torch.Tensor]
    calibration: Int8CalibrationSet | None
    example: torch.Tensor


def prepare_model(
    model: str | torch.nn.Module,
    config: FusionConfig | None,
    *,
    img_size: int | None,
    checkpoint: str | Path | None,
    pretrained: bool,
    seed: int,
    batch: int,
    int8: Int8Config | None,
    parity_images: str | Path | None,
) -> PreparedModel:
    """Create (seeded) or copy the model, load its weights, fuse it, and gather its image sets and calibration set
    (checked before any slow work); the arguments are `export_onnx`'s.

    Raises:
        TofuError: an unknown model, a bad checkpoint or schedule, missing calibration images.
    """
    if isinstance(model, str):
        with seeded(seed):
            name, module = model, create_model(model, img_size=img_size, pretrained=pretrained)
    else:
        name, module = type(model).__name__, copy.deepcopy(model).eval()
    if checkpoint is not None:
        load_checkpoint(module, checkpoint)
    fingerprint = weights_fingerprint(module)
    random_weights = isinstance(model, str) and checkpoint is None and not pretrained
    reference = copy.deepcopy(module) if int8 is not None else None
    use_step(fuse(module, config or FusionConfig()), "torch")  # the standard-op step, whatever the device
    image_sets = parity_image_sets(module, parity_images)
    bundled_skip = PHOTO_PARITY_IMAGES if parity_images is None else 0  # parity's bundled photos: not calibration's
    return PreparedModel(
        name=module.tofu_plan.arch.name if isinstance(model, str) else name,
        module=module,
        reference=reference,
        seed=seed if random_weights else None,  # loaded weights (or a model object's) were not drawn from it
        fingerprint=fingerprint,
        image_sets=image_sets,
        calibration=calibration_images(int8, module, bundled_skip) if int8 is not None else None,
        example=image_sets["random"][:1].expand(batch, -1, -1, -1).contiguous(),
    )
