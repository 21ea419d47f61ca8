"""The TensorRT-target INT8 graph: TensorRT-RTX parses and builds it on a CPU; `build_engine` / `tofu-edge build` build
it explicitly quantized (strongly typed, no calibrator) against the TensorRT stand-in; a real GPU runs it (``trt``)."""

from __future__ import annotations

import enum
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from tests.conftest import images_for, tiny_model
from tests.engine.test_engine_gpu import plugin_library
from tofu_edge import FusionConfig
from tofu_edge.cli import app
from tofu_edge.engine import build_engine, sidecar_path
from tofu_edge.engine.tensorrt_rtx import check_with_tensorrt_rtx, tensorrt_rtx_available
from tofu_edge.errors import ConfigError
from tofu_edge.export import export_onnx
from tofu_edge.export.graph import set_metadata
from tofu_edge.export.quantize import Int8Config

needs_trt_rtx = pytest.mark.skipif(
    not tensorrt_rtx_available(), reason="tensorrt_rtx is not importable (pip install tensorrt-rtx)"
)
INT8_ENGINE_MIN_COSINE = 0.995  # a GPU's INT8 kernels against onnxruntime's reference Q/DQ arithmetic on the CPU


@pytest.fixture(scope="module")
def int8_onnx(tmp_path_factory):
    """The tiny ViT fused (r=2) and quantized for TensorRT: symmetric Q/DQ on its Linear layers."""
    path = tmp_path_factory.mktemp("int8") / "m_int8.onnx"
    return export_onnx(tiny_model("vit"), path, FusionConfig(r=2), int8=Int8Config(target="tensorrt")).onnx_path


@pytest.fixture
def strong_typing(stub_trt, monkeypatch):
    """The stand-in with TensorRT 10's strong typing and INT8 flag; ``stub_trt.networks`` records creation flags."""
    stub_trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 5})
    stub_trt.BuilderFlag = enum.Enum("BuilderFlag", "FP16 TF32 INT8")
    stub_trt.networks = []
    create = stub_trt.Builder.create_network

    def create_network(self, flags):
        stub_trt.networks.append(flags)
        return create(self, flags)

    monkeypatch.setattr(stub_trt.Builder, "create_network", create_network)
    return stub_trt


@needs_trt_rtx
def test_int8_graph_parses_and_builds_with_tensorrt_rtx(int8_onnx):
    result = check_with_tensorrt_rtx(int8_onnx)
    assert result.errors == () and result.parsed and result.built and result.engine_bytes > 0


def test_int8_engine_is_explicitly_quantized_and_strongly_typed(strong_typing, int8_onnx, tmp_path):
    report = build_engine(int8_onnx, tmp_path / "m.engine")
    assert strong_typing.networks == [1 << 5]
    assert strong_typing.calls[-1]["flags"] == ["TF32"]  # no precision flag, no calibrator
    sidecar = json.loads(sidecar_path(report.engine_path).read_text())
    assert sidecar["precision"] == "int8" and sidecar["strongly_typed"] is True
    assert sidecar["onnx"]["metadata"]["int8"]["target"] == "tensorrt"


def test_int8_with_fp16_builds_weakly_typed_with_both_flags(strong_typing, int8_onnx, tmp_path):
    report = build_engine(int8_onnx, tmp_path / "m.engine", fp16=True)
    assert strong_typing.networks == [0] and strong_typing.calls[-1]["flags"] == ["FP16", "INT8", "TF32"]
    assert report.precision == "int8+fp16" and not report.strongly_typed


def test_tensorrt_8_without_strong_typing_uses_the_int8_flag(stub_trt, int8_onnx, tmp_path):
    stub_trt.BuilderFlag = enum.Enum("BuilderFlag", "FP16 TF32 INT8")
    report = build_engine(int8_onnx, tmp_path / "m.engine")
    assert stub_trt.calls[-1]["flags"] == ["INT8", "TF32"] and report.precision == "int8"


def test_float_graphs_build_as_before(strong_typing, tiny_onnx, tmp_path):
    report = build_engine(tiny_onnx, tmp_path / "m.engine")
    assert strong_typing.networks == [0] and report.precision == "fp32" and not report.strongly_typed


def test_an_int8_file_for_onnxruntime_cpus_is_refused_before_tensorrt(int8_onnx, tmp_path, no_tensorrt):
    cpu_file = tmp_path / "cpu_int8.onnx"
    model = onnx.load(int8_onnx)
    entry = json.loads(next(p.value for p in model.metadata_props if p.key == "tofu_edge.int8"))
    set_metadata(model, {"tofu_edge.int8": json.dumps(entry | {"target": "onnxruntime-cpu", "recipe": "dynamic"})})
    onnx.save(model, cpu_file)
    with pytest.raises(ConfigError, match="INT8 for onnxruntime on CPUs .dynamic recipe.* --int8-target tensorrt"):
        build_engine(cpu_file, tmp_path / "m.engine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu_int8.onnx"]


def test_build_command_takes_the_int8_file(strong_typing, int8_onnx, tmp_path):
    result = CliRunner().invoke(app, ["build", str(int8_onnx), "-o", str(tmp_path / "m.engine")])
    assert result.exit_code == 0, result.output
    assert "int8" in result.stdout and (tmp_path / "m.engine.json").is_file()


@pytest.mark.gpu
@pytest.mark.trt
def test_int8_engine_matches_onnxruntime_on_a_gpu(tensorrt_gpu, int8_onnx, tmp_path):
    from tofu_edge.engine import EngineRunner

    images = images_for(tiny_model("vit"), batch=1, seed=3).numpy()
    engine = build_engine(int8_onnx, tmp_path / "m.engine").engine_path
    with EngineRunner(engine) as runner:
        logits = runner.run(images).outputs["logits"]
    session = ort.InferenceSession(str(int8_onnx), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"images": images})[0]
    cosine = float((logits * expected).sum() / (np.linalg.norm(logits) * np.linalg.norm(expected)))
    assert cosine >= INT8_ENGINE_MIN_COSINE


@pytest.mark.gpu
@pytest.mark.trt
def test_int8_plugin_flavour_builds_on_a_gpu(tensorrt_gpu, tmp_path):
    library = plugin_library()
    path = export_onnx(
        tiny_model("vit"), tmp_path / "p.onnx", FusionConfig(r=2), int8=Int8Config(target="tensorrt"), flavor="plugin"
    ).onnx_path
    assert build_engine(path, tmp_path / "p.engine", plugins=library).precision == "int8"
