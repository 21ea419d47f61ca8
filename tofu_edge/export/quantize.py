"""INT8 for fused models: the recipe per target, which nodes are quantized, and onnxruntime's quantizer run on them.

Only the Linear layers of the transformer blocks (qkv, proj, fc1, fc2) are quantized. They are found in the exported
graph by their weights: a MatMul/Gemm whose weight initializer holds exactly a Linear layer's weight (or its
transpose). Everything else stays float: the patch embedding, LayerNorm (one op, opset >= 17), softmax, the residual
adds, the head, and the whole fusion step (its key projection, cosine scores and assignment matmul), so the matching
decisions are those of a float model. After quantization every other node is checked to be unchanged and fed by
float tensors.

Needs numpy only at import (torch-free, so `tofu_edge.engine` and the CLI can read the names below); onnx and
onnxruntime are imported when a model is quantized. Calibration images and the export step are in
`tofu_edge.export.calibration`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tofu_edge.choices import parse_choice
from tofu_edge.errors import ConfigError, ExportError

if TYPE_CHECKING:
    import onnx

__all__ = [
    "Int8Target",
    "Int8Recipe",
    "Int8Config",
    "DEFAULT_CALIBRATION_COUNT",
    "INT8_METADATA_KEY",
    "linear_nodes",
    "quantize_graph",
    "check_quantized",
]

DEFAULT_CALIBRATION_COUNT = 64
INT8_METADATA_KEY = "tofu_edge.int8"
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger"})
KEPT_FLOAT = (
    "patch embedding, fusion step (key projection, scores, assignment), LayerNorm, softmax, residual adds, head"
)


class _Choice(str, Enum):
    def __str__(self) -> str:
        return self.value


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


def linear_nodes(model: onnx.ModelProto, weights: Mapping[str, np.ndarray]) -> dict[str, str]:
    """The MatMul/Gemm nodes that compute the given Linear layers, found by their weights.

    A node matches a layer when its second input is an initializer equal, bit for bit, to the layer's weight
    ``[out, in]`` or its transpose (the exporter folds ``W.T`` into an initializer). The fusion step's key
    projection is built from a slice or a head average of the qkv weight, so it never matches.

    Args:
        model: The exported float graph.
        weights: Layer name (``blocks.0.attn.qkv``) -> its weight ``[out, in]``.

    Returns:
        Node name -> layer name, in graph order.

    Raises:
        ExportError: a layer has no node, or several (the graph is not laid out as the exporter writes it).
    """
    from onnx.numpy_helper import to_array

    keys: dict[tuple[tuple[int, ...], bytes], str] = {}
    for name, weight in weights.items():
        weight = np.ascontiguousarray(weight, dtype=np.float32)
        keys[(weight.shape, weight.tobytes())] = name
        keys[(weight.T.shape, np.ascontiguousarray(weight.T).tobytes())] = name
    initializers = {t.name: t for t in model.graph.initializer}
    found: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        array = to_array(initializers[node.input[1]])
        layer = keys.get((array.shape, np.ascontiguousarray(array, dtype=np.float32).tobytes()))
        if layer is not None:
            found[node.name] = layer
    counts = {name: list(found.values()).count(name) for name in weights}
    wrong = [f"{name} ({n} nodes)" for name, n in counts.items() if n != 1]
    if wrong:
        raise ExportError(
            f"cannot find the Linear layers in the exported graph by their weights: {', '.join(wrong[:4])}; "
            "export without --int8, or report this model"
        )
    return found


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
        if _detach_float_consumers(model, set(nodes)):
            onnx.save(model, str(output))


def check_quantized(original: onnx.ModelProto, quantized: onnx.ModelProto, nodes: set[str], recipe: Int8Recipe) -> None:
    """Every node in ``nodes`` was quantized (Q/DQ recipes feed it from DequantizeLinear, the others replace it), and
    every other node of ``original`` is in ``quantized`` with its op and reads no quantized tensor but a Linear
    layer's own dequantized output (its bias add).

    Raises:
        ExportError: naming the first Linear layer left in float, or the first node the quantizer changed.
    """
    producers = {output: node for node in quantized.graph.node for output in node.output}
    kept = {node.name: node for node in quantized.graph.node}
    for name in nodes:
        node = kept.get(name)
        if recipe is Int8Recipe.DYNAMIC or recipe is Int8Recipe.STATIC_QOPERATOR:
            left = node is not None and node.op_type in ("MatMul", "Gemm")
        else:
            left = node is None or any(
                getattr(producers.get(i), "op_type", "") != "DequantizeLinear" for i in node.input[:2]
            )
        if left:
            raise ExportError(f"INT8: onnxruntime's quantizer left Linear node {name!r} in float")
    for node in original.graph.node:
        if node.name in nodes:
            continue
        got, op_type = kept.get(node.name), node.op_type
        if got is None and node.op_type == "Gemm":  # the dynamic quantizer rewrites Gemm as MatMul + Add, in float
            got, op_type = kept.get(f"{node.name}_MatMul"), "MatMul"
        if got is None or got.op_type != op_type:
            raise ExportError(f"INT8: the quantizer changed {node.op_type} node {node.name!r}, which must stay float")
        for name in got.input:
            if getattr(producers.get(name), "op_type", "") in QUANTIZED_OPS and not _linear_output(
                producers, name, nodes
            ):
                raise ExportError(f"INT8: {node.op_type} node {node.name!r} reads quantized tensor {name!r}")


def _linear_output(producers: dict[str, onnx.NodeProto], name: str, nodes: set[str]) -> bool:
    """Whether tensor ``name`` is a quantized Linear layer's own output, dequantized (its bias add reads it)."""
    dq = producers.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        return False
    source = producers.get(dq.input[0])
    if source is not None and source.op_type == "QuantizeLinear":
        source = producers.get(source.input[0])
    return source is not None and source.name.removesuffix("_quant") in nodes


def _quantized_input(producers: dict[str, onnx.NodeProto], name: str) -> str | None:
    """The float tensor that a Q/DQ pair ending in ``name`` quantizes, ``None`` if ``name`` is not such a pair."""
    dq = producers.get(name)
    q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None


def _detach_float_consumers(model: onnx.ModelProto, quantized: set[str]) -> bool:
    """Give nodes that are not quantized their float input back where the quantizer fed them the Q/DQ pair of a Linear
    layer's input (it shares one pair among all consumers of a tensor, e.g. qkv and the fusion step's key
    projection). Pairs on a Linear layer's output, which its bias add reads, stay."""
    producers = {output: node for node in model.graph.node for output in node.output}
    linear_inputs = {
        source
        for node in model.graph.node
        if node.name in quantized
        for name in node.input
        if (source := _quantized_input(producers, name)) is not None
    }
    changed = False
    for node in model.graph.node:
        if node.name in quantized or node.op_type in QUANTIZED_OPS:
            continue
        for index, name in enumerate(node.input):
            source = _quantized_input(producers, name)
            if source is not None and source in linear_inputs:
                node.input[index] = source
                changed = True
    return changed


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
