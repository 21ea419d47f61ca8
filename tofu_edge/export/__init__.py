"""Exporters: portable ONNX (standard ops, static shapes) with parity checks."""

from tofu_edge.export.onnx import ExportReport, export_onnx
from tofu_edge.export.parity import ParityReport, ParityTolerance

__all__ = ["export_onnx", "ExportReport", "ParityReport", "ParityTolerance"]
