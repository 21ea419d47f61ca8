"""`step_layers`: how many TensorRT layers a fused graph's fusion steps cost, from TensorRT-RTX's parser on the CPU.

A Jetson without our plugins runs the portable flavour, and TensorRT turns each of its ONNX nodes into one or
more layers (a Slice into about 25 layers of index arithmetic). The cost of one fusion step in layers is the
difference between the fused graph and the same model unfused, over the steps that remove tokens. Parsing takes
well under a second for a ViT-S; no GPU is needed.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tofu_edge.engine.sidecar import inspect_onnx
from tofu_edge.engine.tensorrt_rtx import check_with_tensorrt_rtx
from tofu_edge.errors import ConfigError
from tofu_edge.files import atomic_outputs

if TYPE_CHECKING:
    from tofu_edge.export import ExportReport

__all__ = ["StepLayers", "step_layers", "count_steps", "check_export_with_tensorrt_rtx"]


@dataclass(frozen=True)
class StepLayers:
    """TensorRT-RTX's layer counts of a fused graph and its unfused twin.

    Attributes:
        fused: Layers of the fused graph.
        unfused: Layers of the same model exported unfused.
        steps: Blocks that remove tokens.
        per_step: ``(fused - unfused) / steps``.
        tensorrt_rtx_version: The parser's version.
    """

    fused: int
    unfused: int
    steps: int
    per_step: float
    tensorrt_rtx_version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_steps(plan: dict[str, Any]) -> int:
    """Blocks of a plan (as ``FusionPlan.to_dict`` writes it in the ONNX metadata) that remove tokens."""
    return sum(1 for block in plan["blocks"] if block["r"] > 0)


def step_layers(fused_onnx: str | Path, unfused_onnx: str | Path) -> StepLayers:
    """Parse both files with TensorRT-RTX and count the layers the fusion steps add.

    Raises:
        ConfigError: a file is not a portable tofu-edge export TensorRT-RTX can parse (a plugin-flavour file needs
            plugins that TensorRT-RTX cannot load), or the first file removes no tokens.
        MissingDependencyError: ``tensorrt_rtx`` is not installed.
    """
    plan = inspect_onnx(fused_onnx).metadata.get("plan")
    if not isinstance(plan, dict):
        raise ConfigError(f"{fused_onnx} has no tofu-edge plan in its metadata: export it with tofu-edge export")
    steps = count_steps(plan)
    if steps == 0:
        raise ConfigError(f"{fused_onnx} removes no tokens: it has no fusion step to count")
    fused, unfused = (check_with_tensorrt_rtx(path, build=False) for path in (fused_onnx, unfused_onnx))
    for check in (fused, unfused):
        if not check.parsed:
            raise ConfigError(f"TensorRT-RTX cannot parse {check.onnx_path}: {json.dumps(check.errors[:1])}")
    return StepLayers(
        fused=fused.layers,
        unfused=unfused.layers,
        steps=steps,
        per_step=(fused.layers - unfused.layers) / steps,
        tensorrt_rtx_version=fused.tensorrt_rtx_version,
    )


def check_export_with_tensorrt_rtx(
    report: ExportReport, *, checkpoint: str | Path | None = None, img_size: int | None = None
) -> dict[str, Any]:
    """Parse and build an export with TensorRT-RTX (SM89, on the CPU), count its fusion steps' layers against an
    unfused twin exported the same way, and add both as ``tensorrt_rtx`` to the export's JSON report.

    Args:
        report: What `tofu_edge.export.export_onnx` returned for a model given by name.
        checkpoint: The weights that export loaded, for the twin.
        img_size: The image size that export used, for the twin.

    Returns:
        The ``tensorrt_rtx`` entry: `TensorRTCheck.to_dict` plus ``step_layers`` (`StepLayers.to_dict`; ``None``
        for an INT8 file, whose Q/DQ layers a float twin does not have, or a file without fusion steps).

    Raises:
        ConfigError: a plugin-flavour file (TensorRT-RTX cannot load plugins).
        MissingDependencyError: ``tensorrt_rtx`` is not installed.
    """
    from tofu_edge.export import export_onnx

    if report.flavor.value != "portable":
        raise ConfigError("TensorRT-RTX cannot load plugins: check the portable flavour (--flavor portable)")
    entry = check_with_tensorrt_rtx(report.onnx_path, build=True).to_dict()
    entry["step_layers"] = None
    if report.int8 is None and any(block.r > 0 for block in report.plan.blocks):
        with tempfile.TemporaryDirectory(prefix="tofu-edge-twin-") as folder:
            twin = export_onnx(
                report.model,
                Path(folder) / "unfused.onnx",
                None,
                img_size=img_size,
                checkpoint=checkpoint,
                batch=report.input_shape[0],
                dynamic_batch=report.dynamic_batch,
                opset=report.opset,
            )
            entry["step_layers"] = step_layers(report.onnx_path, twin.onnx_path).to_dict()
    saved = json.loads(report.report_path.read_text())
    saved["tensorrt_rtx"] = entry
    with atomic_outputs(report.report_path) as (temp,):
        temp.write_text(json.dumps(saved, indent=2) + "\n")
    return entry
