"""Real TensorRT on a real GPU: build engines from tiny exported models, run them, compare with onnxruntime.

Marked ``gpu`` and ``trt`` (left out of the default run; ``pytest -m "gpu or trt" tests/engine``) and skipped with a
reason where TensorRT, cuda-python or a CUDA device is missing. The `build`/`run` commands and the C++ app on a real
GPU are in tests/cli/test_run_command.py and tests/apps/test_cpp_app.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import tofu_edge
from tests.conftest import images_for, tiny_model
from tofu_edge.engine import EngineError, EngineRunner, build_engine, read_sidecar
from tofu_edge.errors import InputShapeError

pytestmark = [pytest.mark.gpu, pytest.mark.trt, pytest.mark.usefixtures("tensorrt_gpu")]

ROOT = Path(__file__).resolve().parents[2]
FP32_MAX_ABS = 1e-4  # strict fp32 (TF32 off) against onnxruntime's fp32 on the CPU
FP32_MIN_COSINE = 0.99999
FP16_MIN_COSINE = 0.995  # fp16 kernels: about 3 decimal digits, and a near-tie may pick another source token
PLUGIN_MAX_ABS = 1e-3  # plugin kernels against the portable graph's ops, both fp32
PLUGIN_MIN_COSINE = 0.9999


def onnxruntime_outputs(onnx_path: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def images(batch: int = 1, seed: int = 1) -> np.ndarray:
    return images_for(tiny_model("vit"), batch=batch, seed=seed).numpy()


def test_fp32_engine_matches_onnxruntime(tiny_onnx, tmp_path):
    report = build_engine(tiny_onnx, tmp_path / "m.engine", tf32=False)
    with EngineRunner(report.engine_path) as runner:
        result = runner.run(images())
    logits = result.outputs["logits"]
    expected = onnxruntime_outputs(tiny_onnx, images())
    assert np.abs(logits - expected).max() <= FP32_MAX_ABS and cosine(logits, expected) >= FP32_MIN_COSINE
    assert result.latency_ms > 0


def test_fp16_engine_within_tolerance(tiny_onnx, tmp_path):
    report = build_engine(tiny_onnx, tmp_path / "m.engine", fp16=True)
    assert read_sidecar(report.engine_path)["precision"] == "fp16"
    with EngineRunner(report.engine_path) as runner:
        logits = runner.run(images()).outputs["logits"]
    expected = onnxruntime_outputs(tiny_onnx, images())
    assert cosine(logits, expected) >= FP16_MIN_COSINE and logits.argmax(1).tolist() == expected.argmax(1).tolist()


def test_dynamic_batch_engine_runs_every_batch_in_its_profile(tiny_onnx_dynamic, tmp_path):
    report = build_engine(tiny_onnx_dynamic, tmp_path / "m.engine", tf32=False, min_batch=1, opt_batch=2, max_batch=4)
    with EngineRunner(report.engine_path) as runner:
        assert (runner.profile.min, runner.profile.opt, runner.profile.max) == (1, 2, 4)
        for batch in (1, 3, 4, 2):
            logits = runner.run(images(batch)).outputs["logits"]
            assert np.abs(logits - onnxruntime_outputs(tiny_onnx_dynamic, images(batch))).max() <= FP32_MAX_ABS
        with pytest.raises(InputShapeError, match="outside the engine's profile"):
            runner.run(images(5))


def test_wrong_input_shape_and_corrupt_engine(tiny_onnx, tmp_path):
    report = build_engine(tiny_onnx, tmp_path / "m.engine")
    with EngineRunner(report.engine_path) as runner, pytest.raises(InputShapeError, match="images"):
        runner.run(np.zeros((1, 3, 64, 64), np.float32))
    corrupt = tmp_path / "corrupt.engine"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(EngineError, match="cannot deserialize"):
        EngineRunner(corrupt)


def test_benchmark_times_with_cuda_events(tiny_onnx, tmp_path):
    report = build_engine(tiny_onnx, tmp_path / "m.engine", timing_cache=tmp_path / "timing.cache")
    assert (tmp_path / "timing.cache").stat().st_size > 0
    with EngineRunner(report.engine_path) as runner:
        stats = runner.benchmark(images(), warmup=2, iterations=20)
    assert stats.samples == 20 and 0 < stats.min_ms <= stats.median_ms <= stats.p99_ms


def test_the_plan_is_plain_for_trtexec(tiny_onnx, tmp_path):
    trtexec = shutil.which("trtexec") or (
        "/usr/src/tensorrt/bin/trtexec" if Path("/usr/src/tensorrt/bin/trtexec").is_file() else None
    )
    if trtexec is None:
        pytest.skip("trtexec is not installed")
    report = build_engine(tiny_onnx, tmp_path / "m.engine")
    result = subprocess.run(
        [trtexec, f"--loadEngine={report.engine_path}", "--iterations=5"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-2000:]


def plugin_library() -> Path:
    candidates = [os.environ.get("TOFU_EDGE_PLUGINS"), ROOT / "build" / "kernels" / "libtofu_edge_plugins.so"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.skip("no plugin library: cmake -S kernels -B build/kernels && cmake --build build/kernels")


@pytest.mark.parametrize("serialize", [False, True], ids=["loaded", "serialized"])
def test_plugin_engine_matches_the_portable_engine(tiny_onnx, tmp_path, serialize):
    library = plugin_library()
    plugin_onnx = tofu_edge.export_onnx(
        tiny_model("vit"), tmp_path / "plugin.onnx", tofu_edge.FusionConfig(r=2), flavor="plugin"
    ).onnx_path
    portable = build_engine(tiny_onnx, tmp_path / "portable.engine", tf32=False)
    plugin = build_engine(
        plugin_onnx, tmp_path / "plugin.engine", tf32=False, plugins=library, serialize_plugins=serialize
    )
    with EngineRunner(portable.engine_path) as runner:
        expected = runner.run(images()).outputs["logits"]
    plugins = None if serialize else library
    with EngineRunner(plugin.engine_path, plugins, allow_host_code=serialize) as runner:
        logits = runner.run(images()).outputs["logits"]
    assert np.abs(logits - expected).max() <= PLUGIN_MAX_ABS and cosine(logits, expected) >= PLUGIN_MIN_COSINE
