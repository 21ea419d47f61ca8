"""`fusable_graph`: the exporter's GELU, reshapes and attention transposes in the forms onnxruntime fuses, with the
same results, and the exported graph no worse after onnxruntime's optimizations than torch's stock export."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import tiny_model
from tofu_edge import FusionConfig
from tofu_edge.export import export_onnx
from tofu_edge.export.rewrite import fusable_graph

ATOL = 1e-6


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.int64 if isinstance(value, list) else np.float32), name)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _optimized_ops(model: onnx.ModelProto, tmp_path) -> Counter:
    """Op counts of the graph onnxruntime runs after its optimizations."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)


def _dynamo_gelu() -> onnx.ModelProto:
    """The dynamo exporter's GELU: ``x * (0.5 * (1 + erf(x / sqrt 2)))``."""
    nodes = [
        helper.make_node("Div", ["x", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]),
        helper.make_node("Mul", ["half", "a"], ["h"]),
        helper.make_node("Mul", ["x", "h"], ["y"]),
    ]
    inits = [_const("sqrt2", 1.4142135), _const("one", 1.0), _const("half", 0.5)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 8])
    return _model(nodes, [x], [y], inits)


def test_gelu_becomes_one_fused_node_with_the_same_values(tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 5, 8), dtype=np.float32) * 3
    model = _dynamo_gelu()
    before, before_ops = _run(model, {"x": x}), _optimized_ops(model, tmp_path)
    fusable_graph(model)
    onnx.checker.check_model(model, full_check=True)
    assert before_ops["Gelu"] == 0 and _optimized_ops(model, tmp_path) == Counter({"Gelu": 1})
    np.testing.assert_allclose(_run(model, {"x": x}), before, atol=ATOL)
    np.testing.assert_allclose(before, torch.nn.functional.gelu(torch.from_numpy(x)).numpy(), atol=ATOL)


def test_gelu_of_another_tensor_is_left_alone():
    model = _dynamo_gelu()
    model.graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 5, 8]))
    model.graph.node[-1].input[0] = "z"  # z * gelu-factor(x): not a GELU
    before = model.SerializeToString()
    assert fusable_graph(model).SerializeToString() == before


@pytest.mark.parametrize(("shape", "dropped"), [([2, 40], True), ([0, 40], False)])
def test_allowzero_is_dropped_only_where_the_shape_has_no_zero(shape, dropped):
    reshape = helper.make_node("Reshape", ["x", "shape"], ["y"], allowzero=1)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = fusable_graph(_model([reshape], [x], [y], [_const("shape", shape)]))
    assert [a.name for a in model.graph.node[0].attribute] == ([] if dropped else ["allowzero"])


def _flatten_transpose_restore(restore: list[int]) -> onnx.ModelProto:
    """[2, 3, 5, 7] -> [-1, 5, 7] -> transpose (0, 2, 1) -> ``restore``: the exporter's ``k.transpose(-2, -1)``."""
    nodes = [
        helper.make_node("Reshape", ["x", "flat"], ["f"]),
        helper.make_node("Transpose", ["f"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Reshape", ["t", "restore"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 7])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return _model(nodes, [x], [y], [_const("flat", [-1, 5, 7]), _const("restore", restore)])


def test_flatten_transpose_restore_becomes_one_transpose():
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 7), dtype=np.float32)
    model = _flatten_transpose_restore([2, 3, 7, 5])
    before = _run(model, {"x": x})
    fusable_graph(model)
    assert [(n.op_type, list(n.attribute[0].ints)) for n in model.graph.node] == [("Transpose", [0, 1, 3, 2])]
    assert not model.graph.initializer  # the shapes went with their reshapes
    np.testing.assert_array_equal(_run(model, {"x": x}), before)


def test_a_restore_to_another_shape_is_left_alone():
    model = _flatten_transpose_restore([6, 7, 5])
    fusable_graph(model)
    assert [n.op_type for n in model.graph.node] == ["Reshape", "Transpose", "Reshape"]


@pytest.mark.filterwarnings("ignore")  # the stock TorchScript exporter warns about tracing
def test_unfused_export_optimizes_to_no_more_nodes_than_the_stock_export(tmp_path):
    """Our unfused export against ``torch.onnx.export(dynamo=False)`` of the same model, after onnxruntime's
    optimizations: a Gelu per block, and no op type more frequent (each node costs a few microseconds)."""
    model = tiny_model("vit").eval()
    ours = onnx.load(export_onnx(model, tmp_path / "ours.onnx", FusionConfig()).onnx_path)
    example = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.onnx.export(model, (example,), tmp_path / "stock.onnx", opset_version=17, dynamo=False)
    ours_ops, stock_ops = _optimized_ops(ours, tmp_path), _optimized_ops(onnx.load(tmp_path / "stock.onnx"), tmp_path)
    assert ours_ops["Gelu"] == len(model.blocks) and ours_ops["Erf"] == 0
    assert sum(ours_ops.values()) <= sum(stock_ops.values())
    assert {op: n for op, n in ours_ops.items() if n > stock_ops.get(op, 0)} == {}


@pytest.mark.parametrize(("family", "rewritten"), [("vit", True), ("deit3_layerscale", True), ("qk_norm", False)])
def test_metric_is_the_head_mean_of_the_attention_keys(tmp_path, family, rewritten):
    """Each fusion step's metric projection becomes a ReduceMean of the attention's own keys (not on q/k-norm
    models, whose metric normalizes the keys first); the export's parity check holds it to PyTorch."""
    model = tiny_model(family).eval()
    report = export_onnx(model, tmp_path / "m.onnx", FusionConfig(r=2))
    graph = onnx.load(report.onnx_path).graph
    means = [n for n in graph.node if n.op_type == "ReduceMean" and n.name.endswith("_keys_mean")]
    assert len(means) == (len(model.blocks) if rewritten else 0)
    assert report.parity.passed


def test_a_metric_that_is_not_the_key_mean_is_left_alone():
    """A MatMul beside a qkv projection whose weights are not the head mean of the key weights keeps its own GEMM."""
    rng = np.random.default_rng(2)
    qkv, metric = rng.standard_normal((8, 3 * 4 * 2), dtype=np.float32), rng.standard_normal((8, 2), dtype=np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w_metric"], ["m"]),
        helper.make_node("MatMul", ["x", "w_qkv"], ["q"]),
        helper.make_node("Reshape", ["q", "shape"], ["r"]),
        helper.make_node("Transpose", ["r"], ["p"], perm=[2, 0, 3, 1, 4]),
        helper.make_node("Gather", ["p", "one"], ["k"], axis=0),
        helper.make_node("Identity", ["m"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(metric, "w_metric"),
        numpy_helper.from_array(qkv, "w_qkv"),
        _const("shape", [1, 5, 3, 4, 2]),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "one"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 8])
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "k")]
    model = _model(nodes, [x], outputs, inits)
    assert sum(n.op_type == "MatMul" for n in fusable_graph(model).graph.node) == 2
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(qkv[:, 8:16].reshape(8, 4, 2).mean(axis=1), "w_metric"))
    feeds = {"x": np.random.default_rng(3).standard_normal((1, 5, 8), dtype=np.float32)}
    before = _run(model, feeds)
    assert [n.op_type for n in fusable_graph(model).graph.node] == [
        "MatMul",
        "Reshape",
        "Transpose",
        "Gather",
        "ReduceMean",
        "Identity",
    ]
    np.testing.assert_allclose(_run(model, feeds), before, atol=ATOL)
