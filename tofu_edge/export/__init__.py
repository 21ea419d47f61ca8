"""Exporters: a fused model as static-shape ONNX (portable or plugin flavour), checked for parity, an exported float
file quantized to INT8, and the one onnxruntime session factory.

Names are imported on first use, so ``tofu_edge.export.ort_session`` and the plugin contract work on a device
without torch; `export_onnx` needs torch, timm, onnx and onnxscript.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "export_onnx",
    "ExportReport",
    "Flavor",
    "ParityReport",
    "ParityTolerance",
    "OrtProvider",
    "ort_session",
    "available_provider",
    "onnx_metadata",
    "MetadataKey",
    "Int8Config",
    "Int8Target",
    "Int8Recipe",
    "quantize_onnx",
    "QuantizedOnnx",
]

_HOMES = {
    "export_onnx": "tofu_edge.export.onnx",
    "ExportReport": "tofu_edge.export.onnx",
    "Flavor": "tofu_edge.choices",
    "ParityReport": "tofu_edge.export.parity",
    "ParityTolerance": "tofu_edge.export.parity",
    "OrtProvider": "tofu_edge.choices",
    "ort_session": "tofu_edge.export.session",
    "available_provider": "tofu_edge.export.session",
    "onnx_metadata": "tofu_edge.export.session",
    "MetadataKey": "tofu_edge.export.metadata",
    "Int8Config": "tofu_edge.export.quantize",
    "Int8Target": "tofu_edge.export.quantize",
    "Int8Recipe": "tofu_edge.export.quantize",
    "quantize_onnx": "tofu_edge.export.int8_export",
    "QuantizedOnnx": "tofu_edge.export.int8_export",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
