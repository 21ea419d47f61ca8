"""Installed package versions, read from package metadata (nothing is imported), for reports and results."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata

__all__ = ["package_versions", "EXPORT_PACKAGES", "MEASURE_PACKAGES"]

EXPORT_PACKAGES = ("tofu-edge", "torch", "timm", "onnx", "onnxscript", "onnxruntime")
MEASURE_PACKAGES = ("tofu-edge", "torch", "timm", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "cuda-python")


def package_versions(names: Iterable[str] = MEASURE_PACKAGES) -> dict[str, str]:
    """``{distribution name: version}`` of those of ``names`` that are installed."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
