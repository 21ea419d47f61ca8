"""`eval MODEL DIR --onnx FILE` compares like with like: the reference is built from the file's seed when it holds
random weights, and a file of another model, other weights or a diffusion step is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image
from typer.testing import CliRunner

from tofu_edge.cli import app
from tofu_edge.measure.file_reference import reference_model
from tofu_edge.models import create_model
from tofu_edge.weights import seeded, weights_fingerprint

MODEL = "deit_tiny_patch16_224"
IMG = 32
COSINE_TOLERANCE = 1e-4


def fake_file(path: Path, **metadata: str) -> Path:
    """An ONNX file taking [1, 3, IMG, IMG] with ``tofu_edge.*`` metadata: enough to be checked, never run."""
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, IMG, IMG])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, IMG, IMG])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["logits"])], "fake", [images], [logits])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(proto, {f"tofu_edge.{key}": value for key, value in metadata.items()})
    onnx.save(proto, path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for index in range(2):
        Image.new("RGB", (40, 40), (60 * index, 100, 200)).save(folder / f"{index}.png")
    return folder


def evaluate(*args) -> object:
    return CliRunner().invoke(app, ["eval", MODEL, *map(str, args), "--img-size", str(IMG)])


def assert_one_line(result, start: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {start}") and result.stderr.count("\n") == 1, result.stderr


def test_the_reference_is_drawn_with_the_files_seed():
    with seeded(5):
        drawn = weights_fingerprint(create_model(MODEL, img_size=IMG))
    reference = reference_model(MODEL, {"seed": "5"}, Path("m.onnx"), img_size=IMG)
    assert weights_fingerprint(reference) == drawn
    assert weights_fingerprint(reference_model(MODEL, {"seed": "6"}, Path("m.onnx"), img_size=IMG)) != drawn


def test_a_file_of_another_architecture_is_refused(photos, tmp_path):
    path = fake_file(tmp_path / "vitb.onnx", model="vit_base_patch16_224")
    assert_one_line(
        evaluate(photos, "--onnx", path),
        f"vitb.onnx was exported from vit_base_patch16_224, not {MODEL}: its outputs cannot be compared; "
        f"evaluate it with tofu-edge eval vit_base_patch16_224 DIR --onnx {path}",
    )


def test_a_file_of_other_weights_names_both_fingerprints_and_the_fix(photos, tmp_path):
    with seeded(0):
        seed0 = weights_fingerprint(create_model(MODEL, img_size=IMG))
    path = fake_file(tmp_path / "m.onnx", model=MODEL, weights_sha256="0123456789abcdef")
    assert_one_line(
        evaluate(photos, "--onnx", path),
        "m.onnx holds other weights than the model's own random weights (weights fingerprint 0123456789abcdef in "
        "the file, ",
    )
    seeded_file = fake_file(tmp_path / "s.onnx", model=MODEL, seed="0", weights_sha256=seed0)
    checkpoint = tmp_path / "w.pt"
    torch.save(create_model(MODEL, img_size=IMG).state_dict(), checkpoint)  # other random weights
    result = evaluate(photos, "--onnx", seeded_file, "--checkpoint", checkpoint)
    assert_one_line(result, f"s.onnx holds other weights than the weights of {checkpoint}")
    assert "leave out --checkpoint (the file holds random weights drawn with seed 0)" in result.stderr


def test_a_seeded_file_whose_seed_draws_other_weights_here_says_so(photos, tmp_path):
    path = fake_file(tmp_path / "m.onnx", model=MODEL, seed="0", weights_sha256="0123456789abcdef")
    result = evaluate(photos, "--onnx", path)
    assert_one_line(result, "m.onnx holds other weights than random weights drawn with seed 0")
    assert "that seed draws other weights here than where the file was exported" in result.stderr


def test_a_diffusion_file_is_not_a_classifier(photos, tmp_path):
    path = fake_file(tmp_path / "dit.onnx", model="dit", diffusion_plan="{}", inputs="{}")
    assert_one_line(evaluate(photos, "--onnx", path), "dit.onnx is one denoising step of a diffusion model")


@pytest.mark.slow
def test_eval_of_a_seeded_export_matches_the_model_it_came_from(photos, tmp_path):
    path = tmp_path / "m.onnx"
    exported = CliRunner().invoke(
        app, ["export", MODEL, "--img-size", str(IMG), "--r", "0", "--seed", "7", "-o", str(path)]
    )
    assert exported.exit_code == 0, exported.output
    result = evaluate(photos, "--onnx", path, "--json")
    assert result.exit_code == 0, result.output
    onnx_variant = json.loads(result.stdout)["variants"][1]
    assert onnx_variant["min_cosine"] > 1 - COSINE_TOLERANCE  # r=0: the same model, the same weights


def test_an_engine_built_from_another_architecture_is_refused_from_its_sidecar(photos, tmp_path):
    engine = tmp_path / "vitb.engine"
    engine.write_bytes(b"\0" * 16)  # never loaded: the sidecar says enough
    sidecar = {"onnx": {"metadata": {"model": "vit_base_patch16_224", "weights_sha256": "0123456789abcdef"}}}
    (tmp_path / "vitb.engine.json").write_text(json.dumps(sidecar))
    assert_one_line(evaluate(photos, "--engine", engine), "vitb.engine was exported from vit_base_patch16_224")
    sidecar["onnx"]["metadata"]["model"] = MODEL
    (tmp_path / "vitb.engine.json").write_text(json.dumps(sidecar))
    assert_one_line(evaluate(photos, "--engine", engine), "vitb.engine holds other weights than the model's own")
