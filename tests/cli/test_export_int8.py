"""`tofu-edge export --int8`: the INT8 report as JSON, `bench` and `eval` of the INT8 file, and INT8 options refused in
one line before any slow work."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import tofu_edge
from tests.measure.test_accuracy import CLASSES, PER_CLASS, make_folder
from tofu_edge.cli import app

MODEL = ["deit_tiny_patch16_224", "--img-size", "32"]  # 5 tokens: "--r 1,1" removes one in blocks 0 and 1
LINEAR_LAYERS = 12 * 4  # DeiT-Ti: qkv, proj, fc1, fc2 in each of 12 blocks

cli = CliRunner()


def run(*args):
    return cli.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_int8_export_then_bench_and_eval_take_the_file(tmp_path):
    weights = tmp_path / "weights.pt"  # the same random weights for the export and eval's unfused model
    torch.manual_seed(0)
    torch.save(tofu_edge.create_model(MODEL[0], img_size=32).state_dict(), weights)
    model = tmp_path / "int8.onnx"
    result = run("export", *MODEL, "--checkpoint", weights, "--r", "1,1", "--int8", "--batch", 2, "-o", model, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    int8 = report["int8"]
    assert int8["target"] == "onnxruntime-cpu" and int8["recipe"] == "dynamic" and int8["calibration"] is None
    assert len(int8["quantized_layers"]) == LINEAR_LAYERS and report["ops"]["MatMulInteger"] == LINEAR_LAYERS
    assert int8["parity_vs_float_fused"]["passed"] and int8["parity_vs_float_fused"]["tolerance"]["min_cosine"] == 0.98
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.json", "int8.onnx", "weights.pt"]

    timed = run("bench", model, "--warmup", 1, "--iterations", 2, "--threads", 1, "--json")
    assert timed.exit_code == 0, timed.output
    header, row = (json.loads(line) for line in timed.stdout.splitlines())
    assert row["batch"] == 2 and row["r_schedule"][:3] == [1, 1, 0] and row["stats"]["median_ms"] > 0

    data = make_folder(tmp_path / "val")
    evaluated = run("eval", *MODEL, data, "--checkpoint", weights, "--onnx", model, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    unfused, variant = json.loads(evaluated.stdout)["variants"]
    assert variant["backend"] == "onnxruntime" and variant["images"] == len(CLASSES) * PER_CLASS
    assert variant["top1_agreement"] >= 0.5 and variant["mean_cosine"] > 0.9  # INT8 fused vs unfused float


def assert_usage_error(result, message, folder):
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert not [p for p in folder.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--calibration-images", "photos"], "--calibration-images applies to INT8 export only; add --int8"),
        (["--int8-target", "tensorrt"], "--int8-target applies to INT8 export only; add --int8"),
        (
            ["--int8", "--int8-recipe", "static-qdq", "--calibration-count", "0"],
            "calibration count must be >= 1, got 0",
        ),
        (["--int8", "--calibration-images", "photos"], "the dynamic INT8 recipe scales activations at run time"),
        (["--int8", "--int8-target", "tensorrt", "--int8-recipe", "dynamic"], "the tensorrt INT8 target takes"),
        (["--int8", "--flavor", "plugin"], "INT8 for onnxruntime on CPUs takes the portable flavour"),
        (["--int8", "--int8-target", "tensorrt", "--calibration-images", "missing"], "calibration folder missing does"),
    ],
)
def test_bad_int8_input_is_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = run("export", *MODEL, "--r", "1", "--clamp", "-o", tmp_path / "out" / "m.onnx", *args)
    assert_usage_error(result, message, tmp_path)


def test_unknown_int8_target_is_refused():
    result = run("export", *MODEL, "--int8", "--int8-target", "tflite", "-o", "m.onnx")
    assert result.exit_code == 2 and "tflite" in result.output


def test_help_says_what_the_tolerances_judge_with_int8():
    result = run("export", "--help")
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "--int8" in text and "--calibration-images" in text and "--calibration-count" in text
    assert "judges the INT8 model against the float fused model" in text
