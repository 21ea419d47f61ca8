"""`tofu-edge run`: one-line errors, classification against the TensorRT and cuda-python stand-ins, and on a GPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.cli.test_build_command import assert_one_line_error, run
from tests.engine.test_engine_gpu import onnxruntime_outputs
from tests.engine.test_runner_with_stubs import CLASSES, engine_file
from tests.stubs.stub_runtime import EVENT_TICK_MS
from tofu_edge.cli import app
from tofu_edge.engine import PreprocessConfig, load_input
from tofu_edge.engine.preprocess import preprocess_image


def test_run_of_a_missing_engine(tmp_path):
    assert_one_line_error(run("run", tmp_path / "nope.engine", tmp_path / "cat.jpg"), "nope.engine does not exist")


def test_run_of_an_empty_engine(tmp_path):
    (tmp_path / "m.engine").write_bytes(b"")
    assert_one_line_error(run("run", tmp_path / "m.engine", tmp_path / "cat.jpg"), "m.engine is empty")


def test_run_without_tensorrt_says_how_to_install_it(tmp_path, no_tensorrt):
    (tmp_path / "m.engine").write_bytes(b"not checked before TensorRT is there")
    result = run("run", tmp_path / "m.engine", tmp_path / "cat.jpg")
    assert_one_line_error(result, "TensorRT 10 is not installed", "pip install tensorrt")


def test_run_with_a_missing_plugin_library(tmp_path):
    (tmp_path / "m.engine").write_bytes(b"plan")
    result = run("run", tmp_path / "m.engine", tmp_path / "cat.jpg", "--plugins", tmp_path / "libnope.so")
    assert_one_line_error(result, "libnope.so does not exist")


def test_run_command_classifies_an_image_with_the_sidecar_preprocessing(cudart, tmp_path):
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "crop_pct": 1.0, "interpolation": "bilinear"}
    engine = engine_file(tmp_path, (1, 3, 8, 8), sidecar={"tensorrt_version": "10.99.0-stub", "preprocess": preprocess})
    pixels = np.random.default_rng(2).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "cat.png")
    result = CliRunner(env={"TOFU_EDGE_PLUGINS": None}).invoke(
        app, ["run", str(engine), str(tmp_path / "cat.png"), "--top", "3", "--iterations", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    with Image.open(tmp_path / "cat.png") as image:
        logits = preprocess_image(image, (8, 8), PreprocessConfig.from_dict(preprocess)).reshape(-1)[:CLASSES]
    assert [entry["class"] for entry in data["top"]] == list(np.argsort(-logits, kind="stable")[:3])
    assert data["preprocess"]["mean"] == [0.5, 0.5, 0.5] and data["tensorrt_version"] == "10.99.0-stub"
    assert data["latency_ms"]["samples"] == 5 and data["first_run_ms"] == pytest.approx(EVENT_TICK_MS)


def test_run_command_fills_a_static_batch_with_copies_of_the_image(cudart, tmp_path):
    engine = engine_file(tmp_path, (4, 3, 8, 8))
    Image.new("RGB", (8, 8), (10, 200, 30)).save(tmp_path / "flat.png")
    result = CliRunner(env={"TOFU_EDGE_PLUGINS": None}).invoke(app, ["run", str(engine), str(tmp_path / "flat.png")])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "flat.png through m.engine [4, 3, 8, 8]:"


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.usefixtures("tensorrt_gpu")
def test_build_and_run_commands(tiny_onnx, tmp_path):
    engine = tmp_path / "m.engine"
    built = CliRunner(env={"TOFU_EDGE_PLUGINS": None}).invoke(
        app, ["build", str(tiny_onnx), "-o", str(engine), "--no-tf32"]
    )
    assert built.exit_code == 0, built.output
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "cat.png")
    ran = CliRunner(env={"TOFU_EDGE_PLUGINS": None}).invoke(
        app, ["run", str(engine), str(tmp_path / "cat.png"), "--top", "3", "--json"]
    )
    assert ran.exit_code == 0, ran.output
    data = json.loads(ran.stdout)
    expected = onnxruntime_outputs(tiny_onnx, load_input(tmp_path / "cat.png", (1, 3, 32, 32)))
    assert data["top"][0]["class"] == int(expected.argmax()) and len(data["top"]) == 3
    assert data["latency_ms"]["median_ms"] > 0
