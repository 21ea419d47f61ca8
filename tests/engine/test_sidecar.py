"""What a build knows before TensorRT runs: the ONNX file's tensors and metadata, the batch profile, the sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.stubs.stub_tensorrt import StubParserError
from tofu_edge.engine import (
    BatchProfile,
    BuildReport,
    EngineError,
    TensorSpec,
    inspect_onnx,
    read_sidecar,
    sidecar_path,
)
from tofu_edge.engine.backend import format_parser_error
from tofu_edge.engine.build import _parse_failure
from tofu_edge.engine.preprocess import IMAGENET_MEAN, PreprocessConfig
from tofu_edge.engine.sidecar import preprocess_for, resolve_profile
from tofu_edge.errors import ConfigError
from tofu_edge.export.plugin_spec import plugin_op_types


def test_inspect_reads_tensors_and_tofu_metadata(tiny_onnx):
    info = inspect_onnx(tiny_onnx)
    assert [s.to_dict() for s in info.inputs] == [{"name": "images", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert info.outputs[0].name == "logits" and info.outputs[0].shape[0] == 1
    assert not info.dynamic_batch
    assert info.metadata["flavor"] == "portable"
    assert info.metadata["input_shape"] == [1, 3, 32, 32]  # JSON values come back parsed
    assert [b["r"] for b in info.metadata["plan"]["blocks"]] == [2, 2, 2, 2]
    assert len(info.sha256) == 64


def test_inspect_sees_a_dynamic_batch(tiny_onnx_dynamic):
    info = inspect_onnx(tiny_onnx_dynamic)
    assert info.dynamic_batch and info.inputs[0].shape == (-1, 3, 32, 32)


@pytest.mark.parametrize(
    "sizes, expected",
    [
        ((None, None, None), (1, 1, 1)),
        ((None, None, 16), (1, 16, 16)),
        ((2, None, None), (2, 2, 2)),
        ((None, 4, None), (1, 4, 4)),
        ((1, 4, 16), (1, 4, 16)),
    ],
)
def test_profile_defaults(tiny_onnx_dynamic, sizes, expected):
    profile = resolve_profile(inspect_onnx(tiny_onnx_dynamic), *sizes)
    assert (profile.min, profile.opt, profile.max) == expected


def test_a_static_batch_has_no_profile_and_accepts_its_own_size(tiny_onnx):
    assert resolve_profile(inspect_onnx(tiny_onnx)) is None
    assert resolve_profile(inspect_onnx(tiny_onnx), max_batch=1) is None


def test_profile_shapes_replace_the_batch_axis():
    assert BatchProfile(1, 4, 8).shapes((-1, 3, 224, 224)) == ((1, 3, 224, 224), (4, 3, 224, 224), (8, 3, 224, 224))
    with pytest.raises(ConfigError):
        BatchProfile(2, 1, 8)


def test_sidecar_composition_is_json_and_complete(tiny_onnx_dynamic, tmp_path):
    info = inspect_onnx(tiny_onnx_dynamic)
    report = BuildReport(
        engine_path=tmp_path / "m.engine",
        sidecar_path=sidecar_path(tmp_path / "m.engine"),
        onnx=info,
        inputs=(TensorSpec("images", (-1, 3, 32, 32), "float32"),),
        outputs=(TensorSpec("logits", (-1, 1000), "float32"),),
        precision="fp16",
        profile=BatchProfile(1, 4, 8),
        tensorrt_version="10.8.0",
        plugins=(Path("/opt/libtofu_edge_plugins.so"),),
        plugins_serialized=True,
        workspace_mib=512,
        engine_bytes=1234,
        seconds={"parse": 0.5, "build": 10.0, "total": 10.6},
    )
    data = json.loads(json.dumps(report.to_dict()))
    assert data["engine"] == "m.engine" and data["precision"] == "fp16" and data["tensorrt_version"] == "10.8.0"
    assert data["batch_profile"] == {"min": 1, "opt": 4, "max": 8}
    assert data["inputs"] == [{"name": "images", "shape": [-1, 3, 32, 32], "dtype": "float32"}]
    assert data["plugins"] == ["/opt/libtofu_edge_plugins.so"] and data["plugins_serialized"] is True
    assert data["onnx"]["metadata"]["flavor"] == "portable" and data["onnx"]["sha256"] == info.sha256
    assert data["preprocess"]["mean"] == list(IMAGENET_MEAN)
    assert data["build_seconds"]["build"] == 10.0 and data["workspace_mib"] == 512


def test_the_sidecar_never_replaces_the_export_report():
    assert sidecar_path("out/deit.engine") == Path("out/deit.engine.json")
    assert sidecar_path("out/deit.engine") != Path("out/deit.onnx").with_suffix(".json")


def test_read_sidecar(tmp_path):
    engine = tmp_path / "m.engine"
    assert read_sidecar(engine) is None
    sidecar_path(engine).write_text('{"precision": "fp32"}')
    assert read_sidecar(engine) == {"precision": "fp32"}
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(EngineError, match="is not valid JSON"):
        read_sidecar(engine)


def test_preprocessing_comes_from_metadata_then_timm_then_imagenet():
    given = preprocess_for({"preprocess": {"mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 1.0}})
    assert given.mean == (0.5, 0.5, 0.5) and given.crop_pct == 1.0 and given.source == "ONNX metadata"
    augreg = preprocess_for({"model": "vit_small_patch16_224"})  # timm's config: inception mean/std, crop 0.9
    assert augreg.mean == (0.5, 0.5, 0.5) and augreg.crop_pct == 0.9 and "timm" in augreg.source
    assert preprocess_for({"model": "VisionTransformer"}) == PreprocessConfig()
    assert preprocess_for({}) == PreprocessConfig()


def test_parser_errors_are_reported_in_full():
    error = StubParserError(12, "/blocks.0/TofuMatch", "TofuMatch")
    line = format_parser_error(error)
    assert line.startswith("node 12 '/blocks.0/TofuMatch' (TofuMatch): UNSUPPORTED_NODE: No importer registered")
    assert "[importFallbackPluginImporter onnxOpImporters.cpp:6212]" in line


def test_every_parser_error_is_listed_with_a_plugin_hint(tiny_onnx):
    errors = [StubParserError(3, "m0", "TofuMatch"), StubParserError(4, "g0", "TofuMerge")]
    message = _parse_failure(inspect_onnx(tiny_onnx), errors, plugin_paths=())
    assert "(2 errors)" in message and "node 3 'm0' (TofuMatch)" in message and "node 4 'g0' (TofuMerge)" in message
    assert "pass --plugins libtofu_edge_plugins.so" in message and "\n" not in message


def test_plugin_op_types_follow_the_plugin_contract():
    assert plugin_op_types() == {"TofuMatch", "TofuMerge"}
