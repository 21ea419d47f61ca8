"""`build_engine` end to end against the TensorRT stand-in: what it asks the builder for and what it writes.

The stand-in (tests/stubs/stub_tensorrt.py) only records the calls; the real builder is exercised by the
`trt`/`gpu` tests in test_engine_gpu.py.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.stubs.stub_tensorrt import PLUGIN_HEADER, make_stub_tensorrt
from tofu_edge.engine import EngineError, build_engine, sidecar_path
from tofu_edge.errors import ConfigError


def test_plain_plan_and_sidecar(stub_trt, tiny_onnx, tmp_path):
    engine = tmp_path / "m.engine"
    report = build_engine(tiny_onnx, engine)
    assert engine.read_bytes() == b'stub-plan:["TF32"]'  # exactly the serialized bytes: no header of ours
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar == json.loads(json.dumps(report.to_dict()))
    assert sidecar["precision"] == "fp32" and sidecar["tf32"] is True and sidecar["batch_profile"] is None
    assert sidecar["tensorrt_version"] == "10.99.0-stub" and sidecar["engine_bytes"] == len(engine.read_bytes())
    assert sidecar["inputs"] == [{"name": "images", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert sidecar["onnx"]["metadata"]["flavor"] == "portable"
    assert stub_trt.calls == [
        {"flags": ["TF32"], "pool_limits": {}, "profiles": [], "plugins_to_serialize": [], "timing_cache": None}
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json"]


def test_fp16_workspace_and_profile_reach_the_builder(stub_trt, tiny_onnx_dynamic, tmp_path):
    report = build_engine(tiny_onnx_dynamic, tmp_path / "m.engine", fp16=True, workspace_mib=256, max_batch=8)
    (call,) = stub_trt.calls
    assert call["flags"] == ["FP16", "TF32"] and call["pool_limits"] == {"WORKSPACE": 256 << 20}
    assert call["profiles"] == [{"images": ((1, 3, 32, 32), (8, 3, 32, 32), (8, 3, 32, 32))}]
    assert report.precision == "fp16" and report.profile.to_dict() == {"min": 1, "opt": 8, "max": 8}


def test_strict_fp32_clears_tf32(stub_trt, tiny_onnx, tmp_path):
    report = build_engine(tiny_onnx, tmp_path / "m.engine", tf32=False)
    assert stub_trt.calls[-1]["flags"] == [] and report.to_dict()["tf32"] is False


def test_fp16_is_refused_without_fast_fp16(monkeypatch, tiny_onnx, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", make_stub_tensorrt(fast_fp16=False))
    with pytest.raises(ConfigError, match="no fast fp16"):
        build_engine(tiny_onnx, tmp_path / "m.engine", fp16=True)
    assert list(tmp_path.iterdir()) == []


def test_timing_cache_is_read_and_written_back(stub_trt, tiny_onnx, tmp_path):
    cache = tmp_path / "timing.cache"
    build_engine(tiny_onnx, tmp_path / "a.engine", timing_cache=cache)
    assert cache.read_bytes() == b"+timings" and stub_trt.calls[-1]["timing_cache"] == b""
    build_engine(tiny_onnx, tmp_path / "b.engine", timing_cache=cache)
    assert stub_trt.calls[-1]["timing_cache"] == b"+timings" and cache.read_bytes() == b"+timings+timings"


def test_plugin_nodes_without_the_library_list_every_parser_error(stub_trt, tiny_onnx_plugin, tmp_path):
    with pytest.raises(EngineError) as caught:
        build_engine(tiny_onnx_plugin, tmp_path / "p.engine")
    message = str(caught.value)
    assert "(8 errors)" in message  # 4 blocks with r=2, a TofuMatch and a TofuMerge node each
    assert message.count("(TofuMatch): UNSUPPORTED_NODE") == 4 and message.count("(TofuMerge): UNSUPPORTED_NODE") == 4
    assert "pass --plugins libtofu_edge_plugins.so" in message
    assert not (tmp_path / "p.engine").exists()


def test_plugins_are_loaded_before_parsing_and_can_be_serialized(stub_trt, tiny_onnx_plugin, tmp_path):
    library = tmp_path / "libtofu_edge_plugins.so"
    library.write_bytes(PLUGIN_HEADER + b"TofuMatch,TofuMerge")
    report = build_engine(tiny_onnx_plugin, tmp_path / "p.engine", plugins=library, serialize_plugins=True)
    assert stub_trt.calls[-1]["plugins_to_serialize"] == [str(library.resolve())]
    assert report.plugins == (library,) and report.plugins_serialized
    assert report.to_dict()["onnx"]["metadata"]["flavor"] == "plugin"


def test_a_library_tensorrt_refuses(stub_trt, tiny_onnx, tmp_path):
    library = tmp_path / "libother.so"
    library.write_bytes(b"\x7fELF not a plugin library")
    with pytest.raises(EngineError, match="could not load plugin library"):
        build_engine(tiny_onnx, tmp_path / "m.engine", plugins=[library])


def test_a_failed_build_writes_nothing(monkeypatch, tiny_onnx, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", make_stub_tensorrt(fail_build=True))
    cache = tmp_path / "timing.cache"
    with pytest.raises(EngineError, match="could not build vit_static.onnx: stub: out of workspace"):
        build_engine(tiny_onnx, tmp_path / "m.engine", timing_cache=cache)
    assert list(tmp_path.iterdir()) == []
