"""Rewrites of an exported graph into the forms that onnxruntime's graph fusions recognise.

torch's dynamo exporter writes three patterns that onnxruntime's optimizer leaves as separate nodes, where the
same model exported by ``torch.onnx.export(..., dynamo=False)`` gets fused ones (measured on DeiT-S: our unfused
export ran at 0.94-0.96 of the speed of that "stock" export, with no ``Gelu`` node and 133 ``Reshape`` nodes against
97 after onnxruntime's optimizations):

- **GELU**: ``0.5 * (1 + erf(x / sqrt 2))`` is computed before the multiplication by ``x``; onnxruntime's GeluFusion
  matches ``(x * (1 + erf(x / sqrt 2))) * 0.5`` only. Reordering the two multiplications gives one ``Gelu`` node
  per MLP instead of five.
- **Reshape with allowzero=1** whose shape has no zero: the same reshape as ``allowzero=0``, which onnxruntime's
  reshape fusion requires before it merges the reshapes around the MatMuls it turns into Gemm.
- **Reshape, Transpose, Reshape** that only flatten leading axes around a transpose (the exporter's form of
  ``k.transpose(-2, -1)`` inside attention): one Transpose of the 4-D tensor, which onnxruntime folds into the
  attention MatMul.

Every rewrite keeps the computation (the GELU reorder changes float rounding only), keeps the node and value
names it does not remove, and works on any graph: a pattern that is not exactly there is left alone. TensorRT's
parser takes the result as it took the original.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["fusable_graph"]

_SQRT2_TOLERANCE = 1e-4


def fusable_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its GELUs, reshapes and attention transposes in onnxruntime's fusable forms (in place).

    Returns:
        The same model object.
    """
    graph = _Graph(model)
    _reorder_gelu(graph)
    _drop_needless_allowzero(graph)
    _fold_flattened_transposes(graph)
    graph.remove_dead()
    return model


class _Graph:
    """Producers, consumers, constants and static shapes of one graph (looked up, never re-derived per pattern)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.constants: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.producer = {output: node for node in self.graph.node for output in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.outputs = {o.name for o in self.graph.output}
        self._shapes: dict[str, tuple[int, ...]] | None = None

    def only_consumer(self, value: str) -> onnx.NodeProto | None:
        """The one node that reads ``value`` (a graph output has none for this purpose)."""
        readers = self.consumers.get(value, [])
        return readers[0] if len(readers) == 1 and value not in self.outputs else None

    def scalar(self, value: str) -> float | None:
        array = self.constants.get(value)
        return float(array.reshape(-1)[0]) if array is not None and array.size == 1 else None

    def shape(self, value: str) -> tuple[int, ...] | None:
        """The static shape of ``value`` from ONNX shape inference (None where unknown or symbolic)."""
        if self._shapes is None:
            try:
                inferred = onnx.shape_inference.infer_shapes(self.model).graph
            except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
                inferred = self.graph
            self._shapes = {}
            for info in (*inferred.input, *inferred.value_info, *inferred.output):
                dims = info.type.tensor_type.shape.dim
                if info.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                    self._shapes[info.name] = tuple(d.dim_value for d in dims)
        return self._shapes.get(value)

    def remove_dead(self) -> None:
        """Drop the nodes and initializers nobody reads any more (what a rewrite bypassed)."""
        while True:
            read = {name for node in self.graph.node for name in node.input} | self.outputs
            dead = [node for node in self.graph.node if not any(output in read for output in node.output)]
            if not dead:
                break
            for node in dead:
                self.graph.node.remove(node)
        unused = [i for i in self.graph.initializer if i.name not in read]
        for initializer in unused:
            self.graph.initializer.remove(initializer)


def _other_input(node: onnx.NodeProto, value: str) -> str | None:
    """The input of a binary ``node`` that is not ``value``."""
    if len(node.input) != 2 or value not in node.input:
        return None
    return node.input[1] if node.input[0] == value else node.input[0]


def _reorder_gelu(graph: _Graph) -> None:
    """``Mul(x, Mul(0.5, Add(Erf(Div(x, sqrt 2)), 1)))`` -> ``Mul(Mul(x, Add(...)), 0.5)``."""
    for erf in [node for node in graph.graph.node if node.op_type == "Erf"]:
        div = graph.producer.get(erf.input[0])
        if div is None or div.op_type != "Div" or not _close(graph.scalar(div.input[1]), math.sqrt(2)):
            continue
        x = div.input[0]
        add = graph.only_consumer(erf.output[0])
        if add is None or add.op_type != "Add" or graph.scalar(_other_input(add, erf.output[0]) or "") != 1.0:
            continue
        half = graph.only_consumer(add.output[0])
        half_constant = _other_input(half, add.output[0]) if half is not None and half.op_type == "Mul" else None
        if half_constant is None or graph.scalar(half_constant) != 0.5:
            continue
        outer = graph.only_consumer(half.output[0])
        if outer is None or outer.op_type != "Mul" or _other_input(outer, half.output[0]) != x:
            continue
        half.input[:] = [x, add.output[0]]
        outer.input[:] = [half.output[0], half_constant]


def _close(value: float | None, target: float) -> bool:
    return value is not None and abs(value - target) < _SQRT2_TOLERANCE


def _drop_needless_allowzero(graph: _Graph) -> None:
    """``allowzero=1`` only differs from the default where the shape holds a 0."""
    for node in graph.graph.node:
        if node.op_type != "Reshape":
            continue
        shape = graph.constants.get(node.input[1])
        if shape is None or (shape == 0).any():
            continue
        kept = [a for a in node.attribute if a.name != "allowzero"]
        del node.attribute[:]
        node.attribute.extend(kept)


def _fold_flattened_transposes(graph: _Graph) -> None:
    """``Reshape(Transpose(Reshape(x, [prod(S[:k]), *S[k:]]), perm), [*S[:k], *permuted S[k:]])`` with
    ``perm[0] == 0`` -> ``Transpose(x, [0..k-1, k-1+perm[1:]])``."""
    for node in list(graph.graph.node):
        if node.op_type != "Reshape":
            continue
        source = graph.shape(node.input[0])
        flat = graph.constants.get(node.input[1])
        transpose = graph.only_consumer(node.output[0])
        if source is None or flat is None or transpose is None or transpose.op_type != "Transpose":
            continue
        restore = graph.only_consumer(transpose.output[0])
        if restore is None or restore.op_type != "Reshape":
            continue
        target = graph.constants.get(restore.input[1])
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
        folded = _folded_perm(source, [int(d) for d in flat], perm, target)
        if folded is None:
            continue
        transpose.input[:] = [node.input[0]]
        del transpose.attribute[:]
        transpose.attribute.append(onnx.helper.make_attribute("perm", folded))
        transpose.output[:] = [restore.output[0]]
        graph.graph.node.remove(restore)


def _folded_perm(
    source: tuple[int, ...], flat: list[int], perm: list[int] | None, target: np.ndarray | None
) -> list[int] | None:
    """The perm of the one Transpose equal to the flatten-transpose-restore chain, or None if it is not one."""
    if perm is None or target is None or not perm or perm[0] != 0 or len(perm) != len(flat):
        return None
    keep = len(flat) - 1  # trailing axes the flattening keeps
    lead = len(source) - keep
    if lead < 1 or list(source[lead:]) != flat[1:] or flat[0] not in (-1, math.prod(source[:lead])):
        return None
    expected = [*source[:lead], *(flat[p] for p in perm[1:])]
    if [int(d) for d in target] != expected:
        return None
    return [*range(lead), *(lead - 1 + p for p in perm[1:])]
