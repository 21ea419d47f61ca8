"""The checks that keep INT8 correct, on tiny hand-built graphs: `check_quantized` refuses a Linear layer left in
float, a node the quantizer changed and a float node fed a quantized tensor; `detach_float_consumers` gives float
nodes back the float input that the quantizer's shared Q/DQ pair took from them.

The float graph is one Linear layer ``linear`` (MatMul + bias Add) and the fusion step's key projection ``key``,
which reads the same input ``x`` and must stay float.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tofu_edge.errors import ExportError
from tofu_edge.export.int8_graph import check_quantized, detach_float_consumers

LINEAR = {"linear"}
QDQ = "static-qdq"
DYNAMIC = "dynamic"


def graph(*nodes: onnx.NodeProto) -> onnx.ModelProto:
    """A model of ``nodes`` reading ``x`` [1, 4] and writing ``y`` and ``k`` (weights as initializers)."""
    weights = [
        numpy_helper.from_array(np.ones((4, 4), np.float32), name)
        for name in ("w", "w_key", "bias", "w_dq", "x_scale", "w_scale")
    ]
    weights.append(numpy_helper.from_array(np.zeros((), np.uint8), "x_zero"))
    return helper.make_model(
        helper.make_graph(
            list(nodes),
            "tiny",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("y", "k")],
            weights,
        )
    )


def float_graph() -> onnx.ModelProto:
    return graph(
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="linear"),
        helper.make_node("Add", ["mm", "bias"], ["y"], name="bias_add"),
        helper.make_node("MatMul", ["x", "w_key"], ["k"], name="key"),
    )


def qdq_nodes(key_input: str = "x", bias_input: str = "mm") -> list[onnx.NodeProto]:
    """The Q/DQ recipe's graph: ``x`` quantized for ``linear``, its weight dequantized; ``key`` reads
    ``key_input``, the bias add ``bias_input``."""
    return [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"], name="x_QuantizeLinear"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"], name="x_DequantizeLinear"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w_dq"], name="w_DequantizeLinear"),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["mm"], name="linear"),
        helper.make_node("Add", [bias_input, "bias"], ["y"], name="bias_add"),
        helper.make_node("MatMul", [key_input, "w_key"], ["k"], name="key"),
    ]


def output_qdq_nodes() -> list[onnx.NodeProto]:
    """A Q/DQ pair on the Linear layer's output, which its bias add reads (the CPU's static recipes)."""
    return [
        helper.make_node("QuantizeLinear", ["mm", "x_scale", "x_zero"], ["mm_q"], name="linear_quant"),
        helper.make_node("DequantizeLinear", ["mm_q", "x_scale", "x_zero"], ["mm_dq"], name="mm_DequantizeLinear"),
    ]


# --- check_quantized: what passes --------------------------------------------------------------------------------


def test_a_qdq_graph_with_only_the_linear_layer_quantized_passes():
    check_quantized(float_graph(), graph(*qdq_nodes()), LINEAR, QDQ)


def test_the_bias_add_may_read_the_linear_layers_own_dequantized_output():
    quantized = graph(*qdq_nodes(bias_input="mm_dq"), *output_qdq_nodes())
    check_quantized(float_graph(), quantized, LINEAR, QDQ)


def test_a_dynamic_graph_replaces_the_linear_node_and_keeps_the_others():
    quantized = graph(
        helper.make_node("DynamicQuantizeLinear", ["x"], ["x_q", "x_s", "x_z"], name="x_DynamicQuantizeLinear"),
        helper.make_node("MatMulInteger", ["x_q", "w_q", "x_z"], ["mm_int"], name="linear_quant"),
        helper.make_node("Cast", ["mm_int"], ["mm"], name="linear_cast", to=TensorProto.FLOAT),
        helper.make_node("Add", ["mm", "bias"], ["y"], name="bias_add"),
        helper.make_node("MatMul", ["x", "w_key"], ["k"], name="key"),
    )
    check_quantized(float_graph(), quantized, LINEAR, DYNAMIC)


def test_a_float_gemm_the_dynamic_quantizer_splits_into_matmul_and_add_passes():
    original = graph(
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="linear"),
        helper.make_node("Gemm", ["mm", "w_key", "bias"], ["y"], name="head"),
    )
    quantized = graph(
        helper.make_node("MatMulInteger", ["x", "w"], ["mm_int"], name="linear_quant"),
        helper.make_node("Cast", ["mm_int"], ["mm"], name="linear_cast", to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["mm", "w_key"], ["head_out"], name="head_MatMul"),
        helper.make_node("Add", ["head_out", "bias"], ["y"], name="head_Add"),
    )
    check_quantized(original, quantized, LINEAR, DYNAMIC)


# --- check_quantized: what it refuses ------------------------------------------------------------------------------


def test_a_linear_node_fed_float_in_a_qdq_graph_is_refused():
    quantized = graph(*float_graph().graph.node)  # the quantizer did nothing
    with pytest.raises(ExportError, match="left Linear node 'linear' in float"):
        check_quantized(float_graph(), quantized, LINEAR, QDQ)


def test_a_linear_node_missing_from_a_qdq_graph_is_refused():
    quantized = graph(*[n for n in qdq_nodes() if n.name != "linear"])
    with pytest.raises(ExportError, match="left Linear node 'linear' in float"):
        check_quantized(float_graph(), quantized, LINEAR, QDQ)


def test_a_linear_node_still_a_matmul_in_a_dynamic_graph_is_refused():
    with pytest.raises(ExportError, match="left Linear node 'linear' in float"):
        check_quantized(float_graph(), graph(*float_graph().graph.node), LINEAR, DYNAMIC)


def test_a_float_node_the_quantizer_replaced_is_refused():
    nodes = [n for n in qdq_nodes() if n.name != "key"]
    nodes.append(helper.make_node("MatMulInteger", ["x_q", "w_key"], ["k"], name="key"))
    with pytest.raises(ExportError, match="the quantizer changed MatMul node 'key', which must stay float"):
        check_quantized(float_graph(), graph(*nodes), LINEAR, QDQ)


def test_a_float_node_the_quantizer_removed_is_refused():
    nodes = [n for n in qdq_nodes() if n.name != "bias_add"]
    with pytest.raises(ExportError, match="the quantizer changed Add node 'bias_add'"):
        check_quantized(float_graph(), graph(*nodes), LINEAR, QDQ)


def test_a_float_node_reading_the_linear_layers_quantized_input_is_refused():
    quantized = graph(*qdq_nodes(key_input="x_dq"))  # the shared Q/DQ pair `detach_float_consumers` undoes
    with pytest.raises(ExportError, match="MatMul node 'key' reads quantized tensor 'x_dq'"):
        check_quantized(float_graph(), quantized, LINEAR, QDQ)


# --- detach_float_consumers ----------------------------------------------------------------------------------------


def inputs_of(model: onnx.ModelProto, name: str) -> list[str]:
    return list(next(n for n in model.graph.node if n.name == name).input)


def test_a_float_node_sharing_the_linear_layers_qdq_pair_gets_its_float_input_back():
    model = graph(*qdq_nodes(key_input="x_dq"))
    assert detach_float_consumers(model, LINEAR)
    assert inputs_of(model, "key") == ["x", "w_key"]
    assert inputs_of(model, "linear") == ["x_dq", "w_dq"]
    check_quantized(float_graph(), model, LINEAR, QDQ)  # and the graph now passes the check


def test_nothing_to_detach_leaves_the_graph_as_it_is():
    model = graph(*qdq_nodes())
    before = model.SerializeToString()
    assert not detach_float_consumers(model, LINEAR)
    assert model.SerializeToString() == before


def test_the_pair_on_a_linear_layers_output_stays_for_its_bias_add():
    model = graph(*qdq_nodes(bias_input="mm_dq"), *output_qdq_nodes())
    assert not detach_float_consumers(model, LINEAR)
    assert inputs_of(model, "bias_add") == ["mm_dq", "bias"]


def test_a_qdq_pair_that_feeds_no_linear_layer_is_left_alone():
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"], name="q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"], name="dq"),
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="linear"),
        helper.make_node("Add", ["mm", "bias"], ["y"], name="bias_add"),
        helper.make_node("MatMul", ["x_dq", "w_key"], ["k"], name="key"),
    ]
    model = graph(*nodes)
    assert not detach_float_consumers(model, LINEAR)
    assert inputs_of(model, "key") == ["x_dq", "w_key"]
