"""A fused model traces to ONNX with standard ops, no reducing scatter and only static dimensions."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import tofu_edge
from tests.conftest import images_for, tiny_model
from tofu_edge import FusionConfig

ATOL = 1e-4


@pytest.fixture(scope="module")
def exported():
    model = tofu_edge.fuse(tiny_model("dinov2_registers"), FusionConfig(r=2, mode="tofu", switch=2))
    images = images_for(model)
    program = torch.onnx.export(model, (images,), dynamo=True, opset_version=18, verbose=False)
    with torch.no_grad():
        expected = model(images).numpy()
    return onnx.shape_inference.infer_shapes(program.model_proto, strict_mode=True), images.numpy(), expected


def reductions(node):
    return [a.s.decode() for a in node.attribute if a.name == "reduction"] or ["none"]


def test_no_scatter_with_a_reduction_in_the_graph(exported):
    scatters = [n for n in exported[0].graph.node if n.op_type.startswith("Scatter")]
    assert all(reductions(n) == ["none"] and n.op_type == "ScatterElements" for n in scatters)
    assert not scatters  # group sums are one-hot assignment matmuls: the step needs no scatter at all


def test_only_standard_onnx_ops(exported):
    assert {n.domain for n in exported[0].graph.node} <= {"", "ai.onnx"}


def test_every_dimension_is_static(exported):
    graph = exported[0].graph
    values = list(graph.input) + list(graph.value_info) + list(graph.output)
    dynamic = [v.name for v in values for d in v.type.tensor_type.shape.dim if not d.HasField("dim_value")]
    assert not dynamic
    assert len(graph.value_info) > 100  # shapes were inferred for the whole graph


def test_onnxruntime_matches_pytorch(exported):
    proto, images, expected = exported
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
