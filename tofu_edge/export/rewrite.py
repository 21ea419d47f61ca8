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

One more rewrite is ours alone: the **matching metric** (the keys averaged over heads) is exported as a projection
of the block's input with the head-averaged key weights, ``x mean_h(W_h) + mean_h(b_h)``
(`tofu_edge.patch.attention`), a thin GEMM of 64 output columns per block that onnxruntime's CPU GEMM runs poorly.
The attention computes those keys anyway, so the metric becomes ``ReduceMean`` over the heads of the attention's own
keys, after checking that the projection's weights are exactly the head mean of the key weights. The two are equal
up to float rounding (the order of the sums), as two runtimes' GEMMs are.

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
    """``model`` with its GELUs, reshapes and attention transposes in onnxruntime's fusable forms and its matching
    metrics taken from the attention's keys (in place).

    Returns:
        The same model object.
    """
    graph = _Graph(model)
    _reorder_gelu(graph)
    _drop_needless_allowzero(graph)
    _fold_flattened_transposes(graph)
    _metric_from_keys(graph)
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


_METRIC_RTOL = 1e-5  # the head-averaged weights are an average of the key weights, up to float rounding


def _metric_from_keys(graph: _Graph) -> None:
    """``Add(MatMul(x, mean_h W_k), mean_h b_k)`` -> ``ReduceMean(K, heads)``, where ``K`` ``[B, H, N, D]`` is the
    key tensor of the attention whose qkv projection reads the same ``x``."""
    for matmul in [node for node in graph.graph.node if node.op_type == "MatMul"]:
        weight = graph.constants.get(matmul.input[1])
        if weight is None or weight.ndim != 2:
            continue
        bias_add = graph.only_consumer(matmul.output[0])
        bias = None
        if bias_add is not None and bias_add.op_type == "Add":
            bias = graph.constants.get(_other_input(bias_add, matmul.output[0]) or "")
        metric = (bias_add if bias is not None else matmul).output[0]
        keys = next(
            (k for k in (_keys_of(graph, qkv, weight, bias) for qkv in graph.consumers[matmul.input[0]]) if k), None
        )
        if keys is None:
            continue
        producer = graph.producer[keys]
        readers = graph.consumers[metric]
        nodes = list(graph.graph.node)
        if any(nodes.index(reader) < nodes.index(producer) for reader in readers):
            continue  # the metric is read before the keys exist: leave it
        if metric in graph.outputs:
            continue
        mean = _reduce_mean(graph, keys, metric, matmul.name)
        for node in (bias_add, matmul) if bias is not None else (matmul,):
            graph.graph.node.remove(node)
        graph.graph.node.insert(list(graph.graph.node).index(producer) + 1, mean)


def _keys_of(
    graph: _Graph, qkv: onnx.NodeProto, metric_weight: np.ndarray, metric_bias: np.ndarray | None
) -> str | None:
    """The ``[B, H, N, D]`` keys that ``qkv`` (a sibling MatMul) projects, if the metric's weights (``[C, D]``) and
    bias are their head mean; else None. Follows timm's attention as exported: qkv MatMul, bias Add, Reshape to
    ``[B, N, 3, H, D]``, Transpose ``(2, 0, 3, 1, 4)``, then index 1 of axis 0 (Slice + Squeeze, or Gather)."""
    weight = graph.constants.get(qkv.input[1]) if qkv.op_type == "MatMul" else None
    channels, depth = metric_weight.shape
    if weight is None or weight.ndim != 2 or weight.shape[0] != channels or weight.shape[1] % (3 * depth):
        return None
    width = weight.shape[1] // 3
    heads = width // depth
    key_weight = weight[:, width : 2 * width].reshape(channels, heads, depth).mean(axis=1)
    if not np.allclose(metric_weight, key_weight, rtol=_METRIC_RTOL, atol=1e-7):
        return None
    output = qkv.output[0]
    add = graph.only_consumer(output)
    qkv_bias = None
    if add is not None and add.op_type == "Add":
        qkv_bias = graph.constants.get(_other_input(add, output) or "")
        if qkv_bias is not None:
            output = add.output[0]
    if (metric_bias is None) != (qkv_bias is None):
        return None
    if metric_bias is not None:
        key_bias = qkv_bias.reshape(3, heads, depth)[1].mean(axis=0)
        if metric_bias.shape != key_bias.shape or not np.allclose(metric_bias, key_bias, rtol=_METRIC_RTOL, atol=1e-7):
            return None
    reshape = graph.only_consumer(output)
    shape = graph.constants.get(reshape.input[1]) if reshape is not None and reshape.op_type == "Reshape" else None
    if shape is None or [int(d) for d in shape[-3:]] != [3, heads, depth]:
        return None
    permute = graph.only_consumer(reshape.output[0])
    if permute is None or permute.op_type != "Transpose" or list(permute.attribute[0].ints) != [2, 0, 3, 1, 4]:
        return None
    return next((k for k in (_index_one(graph, n) for n in graph.consumers[permute.output[0]]) if k), None)


def _index_one(graph: _Graph, node: onnx.NodeProto) -> str | None:
    """The output of ``x[1]`` along axis 0 when ``node`` starts it (Gather of the scalar 1, or Slice [1:2] of axis 0
    then Squeeze of axis 0)."""
    if node.op_type == "Gather":
        index = graph.constants.get(node.input[1])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        return node.output[0] if index is not None and index.ndim == 0 and int(index) == 1 and axis == 0 else None
    if node.op_type != "Slice" or len(node.input) < 4:
        return None
    starts, ends, axes = (graph.constants.get(name) for name in node.input[1:4])
    steps = graph.constants.get(node.input[4]) if len(node.input) > 4 else np.ones(1)
    if any(v is None or v.size != 1 for v in (starts, ends, axes, steps)):
        return None
    if (int(starts[0]), int(ends[0]), int(axes[0]), int(steps[0])) != (1, 2, 0, 1):
        return None
    squeeze = graph.only_consumer(node.output[0])
    axes = graph.constants.get(squeeze.input[1]) if squeeze is not None and squeeze.op_type == "Squeeze" else None
    return squeeze.output[0] if axes is not None and [int(a) for a in axes.reshape(-1)] == [0] else None


def _reduce_mean(graph: _Graph, keys: str, output: str, name: str) -> onnx.NodeProto:
    """``ReduceMean(keys, axes=[1], keepdims=0)`` in the form of the graph's opset (axes an input from 18 on)."""
    opset = next(o.version for o in graph.model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 18:
        return onnx.helper.make_node("ReduceMean", [keys], [output], name=f"{name}_keys_mean", axes=[1], keepdims=0)
    axes = f"{name}_keys_mean_axes"
    graph.graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), axes))
    return onnx.helper.make_node("ReduceMean", [keys, axes], [output], name=f"{name}_keys_mean", keepdims=0)
