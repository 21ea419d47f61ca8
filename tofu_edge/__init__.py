"""tofu-edge: Token Fusion for timm Vision Transformers, with static shapes for ONNX and TensorRT.

``import tofu_edge`` itself imports nothing heavy: each name below is imported on first use, so `tofu_edge.fuse`
needs torch and timm only, `tofu_edge.export_onnx` adds onnx and onnxscript, and the device-side parts
(`tofu_edge.engine`, `tofu-edge build/run/bench FILE`) work without torch at all (docs/design.md, "Layers").
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.6.0"  # the one version: pyproject.toml reads it, CHANGELOG.md's top entry agrees

__all__ = [
    "FusionConfig",
    "Mode",
    "StepOp",
    "Selection",
    "fuse",
    "unfuse",
    "is_fused",
    "use_step",
    "describe_vit",
    "resolve_plan",
    "create_model",
    "export_onnx",
    "ViTArch",
    "BlockPlan",
    "FusionPlan",
    "TofuError",
    "ConfigError",
    "ScheduleError",
    "UnsupportedModelError",
    "UnknownModelError",
    "InputShapeError",
]

_HOMES = {
    "FusionConfig": "tofu_edge.config",
    "Mode": "tofu_edge.config",
    "Selection": "tofu_edge.config",
    "StepOp": "tofu_edge.config",
    "fuse": "tofu_edge.patch",
    "unfuse": "tofu_edge.patch",
    "is_fused": "tofu_edge.patch",
    "use_step": "tofu_edge.patch",
    "describe_vit": "tofu_edge.patch",
    "resolve_plan": "tofu_edge.plan",
    "create_model": "tofu_edge.models",
    "export_onnx": "tofu_edge.export",
    "ViTArch": "tofu_edge.arch",
    "BlockPlan": "tofu_edge.plan",
    "FusionPlan": "tofu_edge.plan",
    "TofuError": "tofu_edge.errors",
    "ConfigError": "tofu_edge.errors",
    "ScheduleError": "tofu_edge.errors",
    "UnsupportedModelError": "tofu_edge.errors",
    "UnknownModelError": "tofu_edge.errors",
    "InputShapeError": "tofu_edge.errors",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
