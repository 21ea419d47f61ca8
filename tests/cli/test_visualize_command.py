"""`tofu-edge visualize`: the picture is written, and bad input is one line with nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tofu_edge.cli import app

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

cli = CliRunner()


@pytest.fixture
def photo(tmp_path) -> Path:
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path)
    return path


def run(*args):
    return cli.invoke(app, ["visualize", *(str(a) for a in args)])


def test_cli_writes_a_png(photo, tmp_path):
    output = tmp_path / "out" / "fused.png"
    result = run(
        "deit_tiny_patch16_224",
        photo,
        "--img-size",
        32,
        "--r",
        "1,1",
        "--mode",
        "tofu",
        "--switch",
        "2",
        "--output",
        output,
    )
    assert result.exit_code == 0, result.output
    assert output.read_bytes().startswith(PNG_SIGNATURE)
    assert "wrote" in result.stdout and "2 patches pruned" in result.stdout  # blocks 0-1 prune one each


@pytest.mark.parametrize("problem", ["missing", "unreadable", "not_png"])
def test_bad_input_is_one_line(photo, tmp_path, problem):
    image = {"missing": tmp_path / "nope.jpg", "unreadable": tmp_path / "bad.jpg", "not_png": photo}[problem]
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    output = tmp_path / ("fused.svg" if problem == "not_png" else "fused.png")
    result = run("deit_tiny_patch16_224", image, "--img-size", 32, "--output", output)
    assert result.exit_code == 2, result.output
    message = {"missing": f"image {image} does not exist", "unreadable": f"cannot read image {image}"}.get(
        problem, "--output writes a PNG"
    )
    assert result.stderr.startswith(f"error: {message}") and result.stderr.strip().count("\n") == 0
    assert not output.exists()
