"""A working folder deleted during a run: the command still writes an output given as an absolute path, or, where
a library needs the folder (torch's exporter reads it while it is imported), fails in one line and leaves nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from tofu_edge.cli.errors import one_line_errors

# the real console entry; the working folder is deleted when `target` (module:attribute) is first called
DELETING = """
import importlib, os, sys
module_name, attribute = sys.argv[1].split(":")
owner = importlib.import_module(module_name)
original = getattr(owner, attribute)
def hook(*args, **kwargs):
    os.rmdir(os.getcwd())
    return original(*args, **kwargs)
setattr(owner, attribute, hook)
from tofu_edge.cli import main
sys.argv = ["tofu-edge", *sys.argv[2:]]
main()
"""
EXPORT = ["export", "deit_tiny_patch16_224", "--img-size", "32", "--r", "1,1"]


def run_deleting(target: str, tmp_path) -> tuple[subprocess.CompletedProcess, list[str]]:
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    args = [*EXPORT, "-o", str(out / "m.onnx")]
    result = subprocess.run([sys.executable, "-c", DELETING, target, *args], cwd=work, capture_output=True, text=True)
    assert not work.exists()
    return result, sorted(p.name for p in out.iterdir())


@pytest.mark.slow
def test_deleted_after_the_trace_the_absolute_output_is_written(tmp_path):
    result, written = run_deleting("tofu_edge.export.onnx:check_parity", tmp_path)
    assert result.returncode == 0, result.stderr
    assert written == ["m.json", "m.onnx"]


def test_a_library_that_needs_the_deleted_folder_is_one_line(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    def command() -> None:
        os.rmdir(work)
        os.getcwd()  # what torch's exporter does while it is imported

    app = typer.Typer()
    app.command()(one_line_errors(command))
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        "error: the working folder was deleted during the run and a library needed it; no output was left "
        "half-written; run the command again from a folder that exists\n"
    )


def test_a_missing_input_file_is_not_taken_for_a_deleted_folder(tmp_path):
    def command() -> None:
        (tmp_path / "nope").read_bytes()

    app = typer.Typer()
    app.command()(one_line_errors(command))
    result = CliRunner().invoke(app, [])
    assert isinstance(result.exception, FileNotFoundError)
