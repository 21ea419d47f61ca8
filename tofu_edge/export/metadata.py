"""The ``tofu_edge.*`` entries of an exported ONNX file's ``metadata_props``: their prefix and names, declared once.

The exporters (`tofu_edge.export.onnx`, `tofu_edge.export.int8_export`, `tofu_edge.diffusion.export`) write them
with `prefixed`; readers (`tofu_edge.export.session.onnx_metadata`, `tofu_edge.engine.sidecar.inspect_onnx`) get
them back with `unprefixed`, keyed by the names below. Imports nothing but the closed-choice base, so
`tofu_edge.engine` reads them on a device without torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tofu_edge.choices import _Choice

__all__ = ["METADATA_PREFIX", "MetadataKey", "prefixed", "unprefixed"]

METADATA_PREFIX = "tofu_edge."


class MetadataKey(_Choice):
    """The name of one ``tofu_edge.*`` metadata entry, prefix removed (JSON values are marked)."""

    MODEL = "model"  # a timm name, or the class name of a model object
    FLAVOR = "flavor"  # `tofu_edge.choices.Flavor`
    CONFIG = "config"  # JSON: the FusionConfig
    PLAN = "plan"  # JSON: the FusionPlan
    INPUT_SHAPE = "input_shape"  # JSON: [batch or "batch", C, H, W]
    VERSIONS = "versions"  # JSON: package -> version of the exporting environment
    WEIGHTS_SHA256 = "weights_sha256"  # `tofu_edge.weights.weights_fingerprint`
    SEED = "seed"  # the seed random weights were drawn with; absent for loaded weights
    INT8 = "int8"  # JSON: the INT8 recipe, layer count and calibration (INT8 files only)
    PREPROCESS = "preprocess"  # JSON: mean, std, crop_pct, interpolation (optional)
    DIFFUSION_PLAN = "diffusion_plan"  # JSON: the DiffusionPlan
    INPUTS = "inputs"  # JSON: input name -> shape (diffusion steps)
    INPUT_RANGES = "input_ranges"  # JSON: input name -> [low, high) of integer inputs (diffusion steps)

    @property
    def prop(self) -> str:
        """The key as written in ``metadata_props`` (``tofu_edge.model``)."""
        return METADATA_PREFIX + self.value


def prefixed(entries: Mapping[MetadataKey, str]) -> dict[str, str]:
    """``entries`` keyed as they are written in ``metadata_props`` (``tofu_edge.<name>``)."""
    return {MetadataKey(key).prop: value for key, value in entries.items()}


def unprefixed(props: Iterable[Any]) -> dict[str, str]:
    """The ``tofu_edge.*`` entries of an ONNX model's ``metadata_props`` (items with ``key`` and ``value``), prefix
    removed; other entries are left out."""
    return {p.key.removeprefix(METADATA_PREFIX): p.value for p in props if p.key.startswith(METADATA_PREFIX)}
