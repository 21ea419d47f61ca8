"""The PyTorch model an exported file is compared with, built like with like from the file's own metadata.

An export records the model it came from (``tofu_edge.model``), the fingerprint of its weights
(``tofu_edge.weights_sha256``) and, for random weights, the seed they were drawn with (``tofu_edge.seed``); an
engine's sidecar keeps them. `eval --onnx` and `eval --engine` build their reference from the same seed when no
checkpoint is given, and refuse in one line a file of another model or other weights: a cosine against an unrelated
model means nothing.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import timm
import torch

from tofu_edge.checkpoint import load_checkpoint
from tofu_edge.errors import ConfigError
from tofu_edge.export import MetadataKey, onnx_metadata
from tofu_edge.models import create_model
from tofu_edge.weights import seeded, weights_fingerprint

__all__ = ["classifier_metadata", "reference_model", "check_same_weights"]


def classifier_metadata(path: Path) -> dict[str, str]:
    """The ``tofu_edge.*`` metadata of an ONNX file, or of the ONNX file an engine was built from (its sidecar), that
    classifies one image batch; empty for an engine without a sidecar.

    Raises:
        ExportError: the ONNX file is missing or is not an ONNX model.
        EngineError: the engine's sidecar is not valid JSON.
        ConfigError: the file is one step of a diffusion model (several inputs), not an image classifier.
    """
    metadata = onnx_metadata(path) if path.suffix.lower() == ".onnx" else _engine_metadata(path)
    if MetadataKey.DIFFUSION_PLAN in metadata or MetadataKey.INPUTS in metadata:
        raise ConfigError(
            f"{path.name} is one denoising step of a diffusion model, not an image classifier: eval compares a "
            f"classifier's outputs on photos; time the file with tofu-edge bench {path}"
        )
    return metadata


def _engine_metadata(path: Path) -> dict[str, str]:
    """The metadata the engine's sidecar keeps of its ONNX file, as strings (the sidecar holds them parsed as JSON:
    a fingerprint that happened to read as a number is left out rather than compared wrongly)."""
    from tofu_edge.engine.sidecar import read_sidecar

    onnx_part = (read_sidecar(path) or {}).get("onnx") or {}
    metadata = {}
    for key, value in (onnx_part.get("metadata") or {}).items():
        if isinstance(value, str):
            metadata[key] = value
        elif key == MetadataKey.SEED and isinstance(value, int):
            metadata[key] = str(value)
        elif key in (MetadataKey.DIFFUSION_PLAN, MetadataKey.INPUTS):
            metadata[key] = "present"
    return metadata


def reference_model(
    model: str,
    metadata: dict[str, str],
    path: Path,
    *,
    img_size: int | None = None,
    checkpoint: str | Path | None = None,
) -> torch.nn.Module:
    """``model`` with the weights the file at ``path`` was exported with, as far as ``metadata`` tells them.

    Without ``checkpoint``, a file exported with random weights (``tofu_edge.seed``) gets the same draw.

    Raises:
        ConfigError: the file was exported from another architecture than ``model`` (names both and what to run).
        CheckpointError: ``checkpoint`` cannot be loaded.
    """
    seed = metadata.get(MetadataKey.SEED) if checkpoint is None else None
    with seeded(int(seed)) if seed is not None else contextlib.nullcontext():
        reference = create_model(model, img_size=img_size)
    if checkpoint is not None:
        load_checkpoint(reference, checkpoint)
    exported_from = metadata.get(MetadataKey.MODEL)  # a timm name, or the class name of a model object
    architecture = getattr(reference, "pretrained_cfg", {}).get("architecture") or model
    if exported_from is not None and exported_from != architecture and timm.is_model(exported_from):
        raise ConfigError(
            f"{path.name} was exported from {exported_from}, not {architecture}: its outputs cannot be compared; "
            f"evaluate it with tofu-edge eval {exported_from} DIR --onnx {path}"
        )
    return reference


def check_same_weights(
    path: Path, metadata: dict[str, str], reference: torch.nn.Module, checkpoint: str | Path | None
) -> None:
    """Refuse a file whose weights' fingerprint (``tofu_edge.weights_sha256``) is not the reference model's.

    Files from before fingerprints were recorded pass unchecked.

    Raises:
        ConfigError: the fingerprints differ; says which weights each side has and what to pass.
    """
    expected = metadata.get(MetadataKey.WEIGHTS_SHA256)
    if expected is None:
        return
    found = weights_fingerprint(reference)
    if found == expected:
        return
    seed = metadata.get(MetadataKey.SEED)
    if checkpoint is not None:
        here = f"the weights of {checkpoint}"
        fix = (
            f"leave out --checkpoint (the file holds random weights drawn with seed {seed})"
            if seed is not None
            else "pass the --checkpoint it was exported with"
        )
    elif seed is not None:
        here = f"random weights drawn with seed {seed}"
        fix = (
            "that seed draws other weights here than where the file was exported (another timm or torch?); export "
            "it again here, or pass its weights with --checkpoint"
        )
    else:
        here = "the model's own random weights"
        fix = "pass the --checkpoint it was exported with (for --pretrained, a checkpoint of timm's hub weights)"
    raise ConfigError(
        f"{path.name} holds other weights than {here} (weights fingerprint {expected} in the file, {found} here); {fix}"
    )
