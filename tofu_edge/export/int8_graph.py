"""Where INT8 goes in an exported graph: the MatMul/Gemm nodes of the Linear layers (found by their weights), and
the checks that onnxruntime's quantizer changed those and nothing else.

Needs numpy and onnx only (torch-free).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from tofu_edge.errors import ExportError

__all__ = ["QUANTIZED_OPS", "linear_nodes", "check_quantized", "detach_float_consumers"]

QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger"})
_REPLACED_RECIPES = ("dynamic", "static-qoperator")  # recipes whose quantized nodes replace the MatMul


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


def check_quantized(original: onnx.ModelProto, quantized: onnx.ModelProto, nodes: set[str], recipe: str) -> None:
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
        if str(recipe) in _REPLACED_RECIPES:
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


def detach_float_consumers(model: onnx.ModelProto, quantized: set[str]) -> bool:
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
