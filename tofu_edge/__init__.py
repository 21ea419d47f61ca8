"""tofu-edge: Token Fusion for timm Vision Transformers, with static shapes for ONNX and TensorRT."""

from tofu_edge.arch import ViTArch
from tofu_edge.config import FusionConfig, Mode
from tofu_edge.errors import (
    ConfigError,
    InputShapeError,
    ScheduleError,
    TofuError,
    UnknownModelError,
    UnsupportedModelError,
)
from tofu_edge.export import export_onnx
from tofu_edge.models import create_model
from tofu_edge.patch import describe_vit, fuse, is_fused, unfuse
from tofu_edge.plan import BlockPlan, FusionPlan, resolve_plan

__version__ = "0.1.0"

__all__ = [
    "FusionConfig",
    "Mode",
    "fuse",
    "unfuse",
    "is_fused",
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
