"""TensorRT-RTX parses and builds (for SM89, on a CPU) the portable ONNX graphs of tiny fused and unfused ViTs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import tofu_edge
from tests.conftest import images_for, tiny_model
from tofu_edge import FusionConfig
from tofu_edge.engine.tensorrt_rtx import check_with_tensorrt_rtx, tensorrt_rtx_available
from tofu_edge.errors import ConfigError, ExportError, MissingDependencyError
from tofu_edge.export.graph import convert_opset

needs_trt_rtx = pytest.mark.skipif(
    not tensorrt_rtx_available(), reason="tensorrt_rtx is not importable (pip install tensorrt-rtx)"
)

FUSED_R = 2


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory) -> dict[str, Path]:
    """Opset-18 and opset-17 exports of the tiny ViT, unfused (r=0) and fused (r=2)."""
    folder = tmp_path_factory.mktemp("trt_rtx")
    files = {}
    for label, r in (("unfused", 0), ("fused", FUSED_R)):
        model = tofu_edge.fuse(tiny_model("vit"), FusionConfig(r=r, mode="tofu", switch=2))
        program = torch.onnx.export(model, (images_for(model),), dynamo=True, opset_version=18, verbose=False)
        files[f"{label}-18"] = folder / f"{label}-18.onnx"
        onnx.save(program.model_proto, files[f"{label}-18"])
        files[f"{label}-17"] = folder / f"{label}-17.onnx"
        onnx.save(convert_opset(program.model_proto, 17), files[f"{label}-17"])
    return files


def scatter_add_model(path: Path) -> Path:
    """A one-node graph ``ScatterElements(reduction="add")``, the merge that the portable graph must avoid."""
    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, 8, 4])
    src = helper.make_tensor_value_info("src", TensorProto.FLOAT, [2, 3, 4])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 8, 4])
    dst_idx = np.random.default_rng(0).integers(0, 8, size=(2, 3, 4))
    index = helper.make_tensor("dst_idx", TensorProto.INT64, list(dst_idx.shape), dst_idx.ravel().tolist())
    node = helper.make_node(
        "ScatterElements", ["data", "dst_idx", "src"], ["out"], name="merge_scatter", axis=1, reduction="add"
    )
    graph = helper.make_graph([node], "scatter_add", [data, src], [out], initializer=[index])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@needs_trt_rtx
@pytest.mark.parametrize("name", ["unfused-18", "fused-18", "unfused-17", "fused-17"])
def test_portable_graph_parses_and_builds(onnx_files, name):
    result = check_with_tensorrt_rtx(onnx_files[name])
    assert result.errors == ()
    assert result.parsed and result.built and result.ok
    assert result.engine_bytes > 0 and result.layers > 0
    assert result.compute_capability == "SM89"


@needs_trt_rtx
def test_parse_only_builds_nothing(onnx_files):
    result = check_with_tensorrt_rtx(onnx_files["fused-17"], build=False)
    assert result.ok and result.parsed
    assert not result.built and result.engine_bytes == 0
    assert result.to_dict()["onnx_path"] == str(onnx_files["fused-17"])


@needs_trt_rtx
def test_dynamic_batch_builds_with_a_unit_profile(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "dynamic_batch", [x], [y])
    path = tmp_path / "dynamic_batch.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    result = check_with_tensorrt_rtx(path)
    assert result.errors == () and result.built


@needs_trt_rtx
def test_scatter_add_is_reported_not_raised(tmp_path):
    # Full TensorRT sends reduction != "none" to the ScatterElements plugin; TensorRT-RTX has no plugins and
    # its parser rejects the attribute (TensorRT-RTX 1.7 leaves the node index at -1 for this error).
    result = check_with_tensorrt_rtx(scatter_add_model(tmp_path / "scatter_add.onnx"))
    assert not result.parsed and not result.built and not result.ok
    assert len(result.errors) == 1
    assert "ScatterElements" in result.errors[0] and "reduction" in result.errors[0]


@needs_trt_rtx
def test_turing_target_reports_the_builder_error(onnx_files):
    # Not a parser failure: TensorRT-RTX 1.7 cannot compile FP32 GEMMs for Turing (SM75), so fp32 graphs
    # build only for SM80 and newer. The error comes back in `errors` instead of as an exception.
    result = check_with_tensorrt_rtx(onnx_files["unfused-17"], compute_capability="sm75")
    assert result.parsed and not result.built
    assert any("SM75" in error for error in result.errors)


@needs_trt_rtx
def test_unknown_compute_capability(onnx_files):
    with pytest.raises(ConfigError, match="SM89"):
        check_with_tensorrt_rtx(onnx_files["unfused-17"], compute_capability="SM90")


def test_missing_file(tmp_path):
    with pytest.raises(ExportError, match="not found"):
        check_with_tensorrt_rtx(tmp_path / "absent.onnx")


def test_missing_module_says_how_to_install(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)  # makes `import tensorrt_rtx` raise ImportError
    assert not tensorrt_rtx_available()
    with pytest.raises(MissingDependencyError, match="pip install tensorrt-rtx"):
        check_with_tensorrt_rtx(path)
