"""Reproducible exports: random weights drawn from --seed, the same command writes byte-identical files, and the seed
and a fingerprint of the weights are recorded in the metadata and the report."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from tofu_edge.cli import app
from tofu_edge.models import create_model
from tofu_edge.weights import FINGERPRINT_CHARS, seeded, weights_fingerprint

MODEL = ["deit_tiny_patch16_224", "--img-size", "32"]
CLI = "import sys; from tofu_edge.cli import main; sys.argv[0] = 'tofu-edge'; main()"
runner = CliRunner()


def export(path, *args):
    result = runner.invoke(app, ["export", *MODEL, "-o", str(path), *map(str, args)])
    assert result.exit_code == 0, result.output
    return path


def metadata(path):
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def test_an_export_records_the_seed_and_the_fingerprint_of_the_weights_it_drew(tmp_path):
    entries = metadata(export(tmp_path / "s1.onnx", "--seed", "1"))
    with seeded(1):
        expected = weights_fingerprint(create_model("deit_tiny_patch16_224", img_size=32))
    with seeded(0):
        seed0 = weights_fingerprint(create_model("deit_tiny_patch16_224", img_size=32))
    assert entries["tofu_edge.seed"] == "1" and entries["tofu_edge.weights_sha256"] == expected != seed0
    report = json.loads((tmp_path / "s1.json").read_text())
    assert report["seed"] == 1 and report["weights_sha256"] == expected


@pytest.mark.slow
@pytest.mark.parametrize(
    "flavour",
    [[], ["--flavor", "plugin"], ["--int8"], ["--int8", "--int8-target", "tensorrt"]],
    ids=["portable", "plugin", "int8-onnxruntime-cpu", "int8-tensorrt"],
)
def test_the_same_export_twice_writes_byte_identical_files(tmp_path, flavour):
    first, second = export(tmp_path / "a.onnx", *flavour), export(tmp_path / "b.onnx", *flavour)
    assert first.read_bytes() == second.read_bytes()
    assert metadata(first)["tofu_edge.seed"] == "0"


@pytest.mark.slow
def test_an_export_of_loaded_weights_records_their_fingerprint_and_no_seed(tmp_path):
    torch.manual_seed(5)
    model = create_model("deit_tiny_patch16_224", img_size=32)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    entries = metadata(export(tmp_path / "m.onnx", "--checkpoint", tmp_path / "w.pt"))
    assert "tofu_edge.seed" not in entries and entries["tofu_edge.weights_sha256"] == weights_fingerprint(model)


def test_seeded_restores_the_callers_generator_and_the_fingerprint_sees_every_tensor():
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    with seeded(0):
        inside = torch.rand(3)
    assert torch.equal(torch.rand(3), want) and not torch.equal(inside, want)
    layer = torch.nn.Linear(2, 2)
    before = weights_fingerprint(layer)
    assert len(before) == FINGERPRINT_CHARS and int(before, 16) >= 0
    with torch.no_grad():
        layer.bias[1] += 1e-6
    assert weights_fingerprint(layer) != before
    assert weights_fingerprint(layer.half()) != weights_fingerprint(layer.float())  # precision counts


@pytest.mark.slow  # the ViT export's test covers the recording; this one the diffusion exporter's own path
def test_the_diffusion_export_records_the_seed_and_fingerprint(tmp_path):
    from tofu_edge.diffusion.models import create_diffusion_model

    output = tmp_path / "dit.onnx"
    args = ["diffusion", "export", "tiny-dit", "-o", str(output), "--parity-runs", "1", "--seed", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    entries = metadata(output)
    assert entries["tofu_edge.seed"] == "3"
    assert entries["tofu_edge.weights_sha256"] == weights_fingerprint(create_diffusion_model("tiny-dit", seed=3))


@pytest.mark.slow
def test_the_same_diffusion_export_twice_writes_byte_identical_files(tmp_path):
    for name in ("a", "b"):
        args = ["diffusion", "export", "tiny-dit", "-o", str(tmp_path / f"{name}.onnx"), "--parity-runs", "1"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


@pytest.mark.slow
def test_exports_in_two_fresh_processes_are_byte_identical(tmp_path):
    """A fresh interpreter each (hash seeds, counters and caches start over), the CLI as a user runs it."""
    for name in ("a", "b"):
        command = [sys.executable, "-c", CLI, "export", *MODEL, "-o", str(tmp_path / f"{name}.onnx")]
        subprocess.run(command, check=True, capture_output=True, timeout=300)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_visualize_twice_draws_the_same_picture_and_another_seed_another(tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(photo)
    pictures = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        args = ["visualize", *MODEL, str(photo), "--r", "1,1", "--seed", str(seed), "-o", str(tmp_path / f"{name}.png")]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        pictures.append((tmp_path / f"{name}.png").read_bytes())
    assert pictures[0] == pictures[1] != pictures[2]
