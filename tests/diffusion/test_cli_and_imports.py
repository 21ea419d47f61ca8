"""`tofu-edge diffusion export` (the typer sub-app) and diffusers staying optional."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tofu_edge.cli.diffusion import diffusion_app

RUNNER = CliRunner()


def test_help_shows_an_example():
    result = RUNNER.invoke(diffusion_app, ["export", "--help"])
    assert result.exit_code == 0
    assert "tofu-edge diffusion export sd15-unet" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["tiny-unet", "--ratio", "1.2"], "error: ratio must be in [0, 1)"),
        (["tiny-unet", "--ratio", "half"], "error: --ratio takes a number or a comma list"),
        (["tiny-unet", "--op", "max"], "error: unknown op 'max'; choose one of prune, mean, mlerp"),
        (["no-such-model"], "error: no-such-model is neither a preset"),
        (["tiny-unet", "--ratio", "0.9"], "error: down_blocks.0.attentions.0.transformer_blocks.0 (level 0"),
        (["tiny-unet", "--sample-size", "15"], "error: latent size 15x15 is not a multiple of 2"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, message):
    result = RUNNER.invoke(diffusion_app, ["export", *args, "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert result.output.startswith(message) and result.output.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_export_command_writes_the_files(tmp_path):
    result = RUNNER.invoke(diffusion_app, ["export", "tiny-pixart", "--merge-mlp", "-o", str(tmp_path / "p.onnx")])
    assert result.exit_code == 0, result.output
    assert "parity: passed" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.onnx"]


def test_tofu_edge_and_fuse_do_not_import_diffusers():
    code = "import sys, tofu_edge; tofu_edge.fuse; import tofu_edge.patch; assert 'diffusers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_diffusers_the_error_says_how_to_install():
    code = (
        "import sys; sys.modules['diffusers'] = None\n"
        "from tofu_edge.errors import MissingDependencyError\n"
        "try:\n    import tofu_edge.diffusion\nexcept MissingDependencyError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "tofu_edge.diffusion needs diffusers: pip install diffusers"
