"""`tofu-edge eval`: the JSON report, the sweep table and plot, an ONNX file, one-line errors, on a tiny dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import tofu_edge
from tests.measure.test_accuracy import CLASSES, PER_CLASS, make_folder
from tofu_edge.cli import app

MODEL = "deit_tiny_patch16_224"
IMG = "32"  # 4 patches: 5 tokens, so "--r 1,1" removes one token in each of blocks 0 and 1
SCHEDULE = "1,1"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ONNX_COSINE_TOLERANCE = 1e-4

cli = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data") / "val")


def run(*args):
    return cli.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_eval_json_reports_reference_and_fused_variant(dataset):
    result = run("eval", MODEL, dataset, "--img-size", IMG, "--r", SCHEDULE, "--batch", 4, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["images"] == len(CLASSES) * PER_CLASS and report["classes"] == len(CLASSES)
    unfused, fused = report["variants"]
    assert unfused["name"] == "unfused" and unfused["top1_agreement"] == 1.0
    assert unfused["min_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert fused["r"][:3] == [1, 1, 0] and fused["macs_ratio"] < 1.0
    assert 0.0 <= fused["top1"] <= fused["top5"] <= 1.0 and fused["images_per_s"] > 0


def test_eval_sweep_prints_a_table_and_writes_a_pareto_png(dataset, tmp_path):
    plot = tmp_path / "pareto.png"
    result = run("eval", MODEL, dataset, "--img-size", IMG, "--sweep", "r=0,1", "--clamp", "--limit", 3, "--plot", plot)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["unfused", "mlerp r=1"]  # r=0 is the unfused model
    assert "3 images" in result.stdout and "tofu-edge bench" in result.stdout
    assert plot.read_bytes().startswith(PNG_SIGNATURE)


def test_eval_of_an_onnx_file_against_the_unfused_model(dataset, tmp_path):
    weights = tmp_path / "weights.pt"  # random weights differ per model creation: fix them for both sides
    torch.manual_seed(0)
    torch.save(tofu_edge.create_model(MODEL, img_size=int(IMG)).state_dict(), weights)
    onnx_path = tmp_path / "tiny.onnx"
    config = tofu_edge.FusionConfig(r=(1, 1))
    tofu_edge.export_onnx(
        MODEL, onnx_path, config, img_size=int(IMG), checkpoint=weights, batch=4, parity_images=dataset / "cat"
    )
    common = ("eval", MODEL, dataset, "--img-size", IMG, "--checkpoint", weights, "--json")
    result = run(*common, "--onnx", onnx_path, "--batch", 3)
    assert result.exit_code == 0, result.output
    unfused, onnx_variant = json.loads(result.stdout)["variants"]
    assert onnx_variant["backend"] == "onnxruntime" and onnx_variant["images"] == unfused["images"]
    pytorch = json.loads(run(*common, "--r", SCHEDULE).stdout)
    fused = pytorch["variants"][1]  # the same fused model in PyTorch: the same figures
    for key in ("top1", "top5", "top1_agreement"):
        assert onnx_variant[key] == fused[key]
    assert onnx_variant["mean_cosine"] == pytest.approx(fused["mean_cosine"], abs=ONNX_COSINE_TOLERANCE)

    wrong_size = run("eval", MODEL, dataset, "--img-size", "48", "--onnx", onnx_path)
    assert wrong_size.exit_code == 2 and "tiny.onnx takes input [4, 3, 32, 32]" in wrong_size.stderr


def one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {message}") or message in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.output and result.stderr.strip().count("\n") == 0


def test_unreadable_image_is_named(dataset, tmp_path):
    root = make_folder(tmp_path / "data", per_class=1)
    (root / "dog" / "broken.png").write_bytes(b"not a png")
    one_line_error(
        run("eval", MODEL, root, "--img-size", IMG), f"error: cannot read image {root / 'dog' / 'broken.png'}"
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--onnx", "model.onnx", "--sweep", "r=0,1"], "--onnx/--engine evaluate that file as it was fused"),
        (["--sweep", "x=1"], "--sweep takes r=INT,INT,... or keep=FRACTION,FRACTION,..."),
        (["--r", "9"], "block 0: r=9 is more than it can remove"),
        (["--plot", "pareto.svg"], "--plot writes a PNG"),
        (["--device", "cuda"], "--device cuda: torch sees no CUDA device"),
    ],
)
def test_bad_options_are_one_line(dataset, extra, message):
    one_line_error(run("eval", MODEL, dataset, "--img-size", IMG, *extra), f"error: {message}")


def test_missing_dataset_and_missing_tensorrt_are_one_line(tmp_path, dataset):
    one_line_error(run("eval", MODEL, tmp_path / "nowhere", "--img-size", IMG), "error: dataset folder")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 16)
    result = run("eval", MODEL, dataset, "--img-size", IMG, "--engine", engine)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0


def test_eval_on_a_flat_folder_reports_agreement_and_cosine_only(dataset):
    flat = dataset / CLASSES[0]  # photos, no class subfolders
    result = run("eval", MODEL, flat, "--img-size", IMG, "--r", SCHEDULE, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["classes"] == 0 and report["images"] == PER_CLASS
    for variant in report["variants"]:
        assert variant["top1"] is None and variant["top5"] is None
        assert 0.0 <= variant["top1_agreement"] <= 1.0 and variant["mean_cosine"] > 0.5
    table = run("eval", MODEL, flat, "--img-size", IMG, "--r", SCHEDULE)
    assert table.exit_code == 0 and "unlabelled" in table.stdout and "no labels" in table.stdout


def test_eval_of_a_headless_model_shows_the_cosine_alone(dataset, tmp_path):
    plot = tmp_path / "pareto.png"
    headless = "vit_small_patch14_dinov2"
    result = run("eval", headless, dataset, "--img-size", 28, "--r", "1,1", "--limit", 2, "--plot", plot)
    assert result.exit_code == 0, result.output
    assert "features, no classifier" in result.stdout
    unfused = next(line for line in result.stdout.splitlines() if line.startswith("│ unfused"))
    assert unfused.count(" - ") == 3  # top-1, top-5 and agreement: nothing to measure without a classifier
    assert plot.read_bytes().startswith(PNG_SIGNATURE)
