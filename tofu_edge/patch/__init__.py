"""Patching timm models in place."""

from tofu_edge.patch.timm import SUPPORTED, describe_vit, fuse, is_fused, unfuse

__all__ = ["fuse", "unfuse", "is_fused", "describe_vit", "SUPPORTED"]
