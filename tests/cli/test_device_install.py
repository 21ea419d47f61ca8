"""The device commands run without torch: `build`, `run`, `bench FILE.onnx|FILE.engine` and
export/python/run_engine.py, each in a subprocess where importing torch, timm or torchvision fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.stubs.stub_runtime import stub_plan

DRIVER = Path(__file__).with_name("without_torch.py")
CLASSES = 10


def without_torch(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    done = subprocess.run(
        [sys.executable, str(DRIVER), *map(str, args)], capture_output=True, text=True, timeout=300, env=environment
    )
    assert "imported:" not in done.stderr, done.stderr  # nothing pulled torch in behind the driver's back
    return done


@pytest.fixture
def engine(tmp_path) -> Path:
    path = tmp_path / "m.engine"
    path.write_bytes(stub_plan((1, 3, 8, 8), CLASSES))
    return path


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(path)
    return path


def test_build_writes_an_engine_and_its_sidecar(tiny_onnx, tmp_path):
    done = without_torch("tofu-edge", "build", tiny_onnx, "-o", tmp_path / "m.engine", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["inputs"][0]["shape"] == [1, 3, 32, 32]
    assert (tmp_path / "m.engine").is_file() and (tmp_path / "m.engine.json").is_file()


def test_run_classifies_an_image(engine, image):
    done = without_torch("tofu-edge", "run", engine, image, "--top", "3", "--iterations", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["top"]) == 3


def test_bench_times_an_onnx_file_in_onnxruntime(tiny_onnx):
    done = without_torch("tofu-edge", "bench", tiny_onnx, "--warmup", "1", "--iterations", "2", "--json")
    assert done.returncode == 0, done.stderr
    header, row = (json.loads(line) for line in done.stdout.splitlines())
    assert header["backend"] == "onnxruntime" and header["torch_threads"] is None
    assert row["variant"] == Path(tiny_onnx).stem and row["stats"]["samples"] == 2 and row["gmacs"] > 0


def test_bench_times_an_engine(engine):
    done = without_torch("tofu-edge", "bench", engine, "--warmup", "1", "--iterations", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[1])["backend"] == "tensorrt"


def test_run_engine_py_classifies_an_image(engine, image):
    done = without_torch("run_engine.py", "run", engine, image, "--top", "2", "--iterations", "2")
    assert done.returncode == 0, done.stderr
    assert "latency: median" in done.stdout


def test_a_command_that_needs_torch_says_so_in_one_line(tmp_path):
    done = without_torch("tofu-edge", "plan", "deit_small_patch16_224", "--r", "13")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: this command needs timm") and len(done.stderr.splitlines()) == 1


def test_plugin_flavour_runs_through_the_native_ops(tiny_onnx_plugin, ort_library, image):
    """A plugin-flavour file in onnxruntime needs no torch once libtofu_edge_ort.so is there."""
    env = {"TOFU_EDGE_ORT_OPS": str(ort_library)}
    done = without_torch(
        "tofu-edge", "bench", tiny_onnx_plugin, "--warmup", "1", "--iterations", "2", "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[1])["stats"]["samples"] == 2
    done = without_torch(
        "tofu-edge", "run", tiny_onnx_plugin, image, "--top", "3", "--iterations", "2", "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["runtime"] == "onnxruntime" and len(result["top"]) == 3


def test_plugin_flavour_without_the_native_ops_says_what_to_do(tiny_onnx_plugin, tmp_path):
    env = {"TOFU_EDGE_ORT_OPS": str(tmp_path / "missing.so")}
    done = without_torch("tofu-edge", "bench", tiny_onnx_plugin, "--iterations", "2", env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: onnxruntime ops library {tmp_path / 'missing.so'} does not exist; build it")
    done = without_torch(
        "tofu-edge", "bench", tiny_onnx_plugin, "--iterations", "2", env={"TOFU_EDGE_ORT_OPS": "reference"}
    )
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert "runs in onnxruntime through the native ops library (not built" in done.stderr
