"""INT8 for fused models: the recipe per target and onnxruntime's quantizer run on the chosen nodes.

Only the Linear layers of the transformer blocks (qkv, proj, fc1, fc2) are quantized. They are found in the exported
graph by their weights: a MatMul/Gemm whose weight initializer holds exactly a Linear layer's weight (or its
transpose). Everything else stays float: the patch embedding, LayerNorm (one op, opset >= 17), softmax, the residual
adds, the head, and the whole fusion step (its key projection, cosine scores and assignment matmul), so the matching
decisions are those of a float model. Finding those nodes and checking that every other node is unchanged and fed by
float tensors is `tofu_edge.export.int8_graph`.

Needs numpy only at import (torch-free, so `tofu_edge.engine` and the CLI can read the names below); onnx and
onnxruntime are imported when a model is quantized. Calibration images are `tofu_edge.export.calibration`, the
export step `tofu_edge.export.int8_export`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tofu_edge.choices import _Choice, parse_choice
from tofu_edge.errors import ConfigError

if TYPE_CHECKING:
    from tofu_edge.export.parity import ParityTolerance

__all__ = [
    "Int8Target",
    "Int8Recipe",
    "Int8Config",
    "DEFAULT_CALIBRATION_COUNT",
    "quantize_graph",
]

DEFAULT_CALIBRATION_COUNT = 64
KEPT_FLOAT = (
    "patch embedding, fusion step (key projection, scores, assignment), LayerNorm, softmax, residual adds, head"
)


class Int8Target(_Choice):
    """Where an INT8 model runs: onnxruntime on a CPU, or TensorRT (explicit quantization: symmetric Q/DQ)."""

    ORT_CPU = "onnxruntime-cpu"
    TENSORRT = "tensorrt"


class Int8Recipe(_Choice):
    """How the Linear layers are quantized (weights: int8, symmetric, per output channel, in every recipe).

    ``dynamic``: activations uint8, scaled per tensor at run time (no calibration; onnxruntime CPU only).
    ``static-qdq``: activations uint8 asymmetric, calibrated, as QuantizeLinear/DequantizeLinear pairs (U8S8).
    ``static-qoperator``: the same numbers as QLinearMatMul nodes.
    ``symmetric-qdq``: activations int8 symmetric (zero point 0), calibrated, Q/DQ pairs: what TensorRT takes.
    """

    DYNAMIC = "dynamic"
    STATIC_QDQ = "static-qdq"
    STATIC_QOPERATOR = "static-qoperator"
    SYMMETRIC_QDQ = "symmetric-qdq"

    @property
    def calibrated(self) -> bool:
        """Whether activation scales come from calibration images."""
        return self is not Int8Recipe.DYNAMIC

    @property
    def activations(self) -> str:
        return _ACTIVATIONS[self]


_ACTIVATIONS = {
    Int8Recipe.DYNAMIC: "uint8, asymmetric, per tensor, computed at run time",
    Int8Recipe.STATIC_QDQ: "uint8, asymmetric, per tensor, calibrated (Q/DQ)",
    Int8Recipe.STATIC_QOPERATOR: "uint8, asymmetric, per tensor, calibrated (QLinearMatMul)",
    Int8Recipe.SYMMETRIC_QDQ: "int8, symmetric (zero point 0), per tensor, calibrated (Q/DQ)",
}
WEIGHTS = "int8, symmetric (zero point 0), per output channel"
# the onnxruntime CPU recipe measured fastest (benchmarks/int8_latency.py); TensorRT takes symmetric Q/DQ only
DEFAULT_RECIPES = {Int8Target.ORT_CPU: Int8Recipe.DYNAMIC, Int8Target.TENSORRT: Int8Recipe.SYMMETRIC_QDQ}


@dataclass(frozen=True)
class Int8Config:
    """Quantize the fused model's Linear layers to INT8 for one target.

    Args:
        target: ``onnxruntime-cpu`` (default) or ``tensorrt``.
        recipe: ``None`` picks the target's (``dynamic`` for onnxruntime on CPUs, ``symmetric-qdq`` for TensorRT,
            which takes no other).
        calibration_images: A folder of images (searched recursively) for the activation ranges of a calibrated
            recipe; ``None``: the ImageNet photos bundled with ``foolbox`` that the parity check does not use.
        calibration_count: At most this many images, a seeded random draw (default 64).
        calibration_data: Instead of a folder: preprocessed model inputs, for data that is not image files.
        tolerance: Judges the INT8 model against the float fused model in `export_onnx` (default
            `tofu_edge.export.int8_export.INT8_TOLERANCE`); the float model is held to ``export_onnx``'s own.

    Raises:
        ConfigError: an unknown target or recipe, a recipe the target cannot run, a count below 1, calibration
            options for the dynamic recipe, or both a folder and arrays.

    Shapes:
        calibration_data: [N, C, H, W] float32, as the model takes it
    """

    target: Int8Target | str = Int8Target.ORT_CPU
    recipe: Int8Recipe | str | None = None
    calibration_images: Path | str | None = None
    calibration_count: int | None = None
    calibration_data: np.ndarray | None = field(default=None, compare=False, repr=False)
    tolerance: ParityTolerance | None = None

    def __post_init__(self) -> None:
        target = parse_choice(Int8Target, self.target, "INT8 target")
        recipe = (
            DEFAULT_RECIPES[target] if self.recipe is None else parse_choice(Int8Recipe, self.recipe, "INT8 recipe")
        )
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "recipe", recipe)
        if target is Int8Target.TENSORRT and recipe is not Int8Recipe.SYMMETRIC_QDQ:
            raise ConfigError(
                f"the tensorrt INT8 target takes symmetric Q/DQ only (explicit quantization); leave out the recipe "
                f"or choose {Int8Recipe.SYMMETRIC_QDQ.value}, not {recipe.value}"
            )
        if self.calibration_images is not None:
            object.__setattr__(self, "calibration_images", Path(self.calibration_images))
        if self.calibration_count is not None and self.calibration_count < 1:
            raise ConfigError(f"calibration count must be >= 1, got {self.calibration_count}")
        given = self.calibration_images is not None or self.calibration_data is not None
        if not recipe.calibrated and (given or self.calibration_count is not None):
            raise ConfigError(
                "the dynamic INT8 recipe scales activations at run time and takes no calibration images; leave out "
                f"the calibration options or choose a calibrated recipe ({Int8Recipe.STATIC_QDQ.value})"
            )
        if self.calibration_images is not None and self.calibration_data is not None:
            raise ConfigError("give calibration images as a folder or as arrays, not both")
        if self.calibration_data is not None and np.ndim(self.calibration_data) != 4:
            raise ConfigError(
                f"calibration data must be [N, C, H, W], got shape {list(np.shape(self.calibration_data))}"
            )

    @property
    def count(self) -> int:
        """The calibration images asked for (the default when none was given)."""
        return self.calibration_count or DEFAULT_CALIBRATION_COUNT

    def to_dict(self) -> dict[str, Any]:
        recipe = self.recipe
        return {
            "target": self.target.value,
            "recipe": recipe.value,
            "activations": recipe.activations,
            "weights": WEIGHTS,
            "kept_float": KEPT_FLOAT,
        }


def quantize_graph(
    source: Path,
    output: Path,
    config: Int8Config,
    nodes: list[str],
    *,
    reader: Any = None,
    cache: Path | None = None,
) -> None:
    """Run onnxruntime's quantizer on ``nodes`` of the float graph ``source`` and write ``output``.

    Calibrated recipes read activation ranges from ``reader`` (a ``CalibrationDataReader``) or from a calibration
    ``cache`` (onnxruntime's JSON): ranges computed on the portable graph are reused for the plugin graph. A
    ``cache`` path that does not exist yet is written with this calibration's ranges.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    from tofu_edge.export.int8_graph import detach_float_consumers

    recipe = config.recipe
    with _quiet_quantizer():
        if recipe is Int8Recipe.DYNAMIC:
            quantize_dynamic(
                source,
                output,
                nodes_to_quantize=nodes,
                op_types_to_quantize=["MatMul", "Gemm"],
                per_channel=True,
                weight_type=QuantType.QInt8,
            )
            return
        symmetric = recipe is Int8Recipe.SYMMETRIC_QDQ
        quantize_static(
            source,
            output,
            reader,
            quant_format=QuantFormat.QOperator if recipe is Int8Recipe.STATIC_QOPERATOR else QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_quantize=nodes,
            per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=cache,
            extra_options={
                "ActivationSymmetric": symmetric,
                "WeightSymmetric": True,
                # TensorRT: Q/DQ on the Linear inputs only, the output stays float for the bias add it fuses; the
                # CPU's static recipes quantize the output too, which onnxruntime needs to fuse them (QLinearMatMul)
                "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"] if symmetric else [],
                "DedicatedQDQPair": True,
            },
        )
    if recipe is not Int8Recipe.STATIC_QOPERATOR:
        model = onnx.load(str(output))
        if detach_float_consumers(model, set(nodes)):
            onnx.save(model, str(output))


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Drop onnxruntime's quantizer warnings (one per tensor it leaves alone; it logs on the root logger)."""

    def keep(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname or record.levelno >= logging.ERROR

    logging.getLogger().addFilter(keep)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(keep)
