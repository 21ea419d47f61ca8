"""Patching timm models in place: `fuse` swaps classes, `FusedBlock` composes each fused block once."""

from tofu_edge.patch.block import FusedBlock
from tofu_edge.patch.steps import FusionStep, use_step
from tofu_edge.patch.timm import SUPPORTED, describe_vit, embed_tokens, fuse, is_fused, unfuse

__all__ = [
    "fuse",
    "unfuse",
    "is_fused",
    "describe_vit",
    "embed_tokens",
    "FusedBlock",
    "FusionStep",
    "use_step",
    "SUPPORTED",
]
