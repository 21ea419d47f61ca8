"""Token fusion for image generation: diffusers UNets and diffusion transformers, static shapes, ONNX export.

Merge-then-unmerge per transformer block (as tomesd does for Stable Diffusion) with ToFu's step operations
(prune, mean, MLERP), token counts fixed when the model is fused and destinations chosen by a fixed rule, so
the fused model exports to portable, static-shape ONNX (docs/diffusion.md).

Needs ``diffusers`` (``pip install diffusers``); ``import tofu_edge`` and `tofu_edge.fuse` never import it.
"""

from __future__ import annotations

from typing import Any

from tofu_edge.errors import MissingDependencyError

try:
    import diffusers  # noqa: F401
except ImportError:
    raise MissingDependencyError("tofu_edge.diffusion needs diffusers: pip install diffusers") from None

from tofu_edge.diffusion.apply import SUPPORTED, DiffusionPlan, apply, is_applied, latent_size, plan_fusion, remove
from tofu_edge.diffusion.config import Destinations, DiffusionFusionConfig
from tofu_edge.diffusion.family import Family
from tofu_edge.diffusion.layers import MergeStep

__all__ = [
    "DiffusionFusionConfig",
    "Destinations",
    "Family",
    "DiffusionPlan",
    "MergeStep",
    "apply",
    "remove",
    "is_applied",
    "plan_fusion",
    "latent_size",
    "export_onnx",
    "DiffusionExportReport",
    "SUPPORTED",
]


def __getattr__(name: str) -> Any:
    """`export_onnx` and its report are imported on first use: fusing needs neither onnx nor onnxruntime."""
    if name in ("export_onnx", "DiffusionExportReport"):
        from tofu_edge.diffusion import export

        return getattr(export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
