"""`tofu-edge build`: one line on stderr and exit code 2 on bad input, and its output against the TensorRT stand-in."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tofu_edge.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], env={"TOFU_EDGE_PLUGINS": None})


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_build_without_tensorrt_says_how_to_install_it(tiny_onnx, tmp_path, no_tensorrt):
    result = run("build", tiny_onnx, "--output", tmp_path / "m.engine")
    assert_one_line_error(
        result, "TensorRT 10 is not installed", "pip install tensorrt", "nvcr.io/nvidia/tensorrt", "JetPack"
    )
    assert list(tmp_path.iterdir()) == []


def test_build_of_a_missing_onnx_file(tmp_path):
    assert_one_line_error(run("build", tmp_path / "nope.onnx", "-o", tmp_path / "m.engine"), "nope.onnx does not exist")


@pytest.mark.parametrize(
    "content, message",
    [(b"\x08\x07garbage\xff\xff\xff", "is not a valid ONNX file"), (b"", "the graph has no inputs")],
    ids=["corrupt", "empty"],
)
def test_build_of_a_file_that_is_not_onnx(tmp_path, content, message):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    assert_one_line_error(run("build", bad, "-o", tmp_path / "m.engine"), message)


@pytest.mark.parametrize(
    "sizes, message",
    [
        (["--min-batch", "4", "--opt-batch", "2", "--max-batch", "8"], "got min=4 opt=2 max=8"),
        (["--opt-batch", "8", "--max-batch", "4"], "got min=1 opt=8 max=4"),
        (["--min-batch", "0"], "1 <= min <= opt <= max"),
    ],
)
def test_build_with_a_bad_batch_profile(tiny_onnx_dynamic, tmp_path, sizes, message):
    assert_one_line_error(run("build", tiny_onnx_dynamic, "-o", tmp_path / "m.engine", *sizes), message)


def test_batch_sizes_on_a_static_batch_model_are_refused(tiny_onnx, tmp_path):
    result = run("build", tiny_onnx, "-o", tmp_path / "m.engine", "--max-batch", "8")
    assert_one_line_error(result, "has a static batch of 1", "--dynamic-batch")


def test_build_with_a_missing_plugin_library(tiny_onnx, tmp_path):
    result = run("build", tiny_onnx, "-o", tmp_path / "m.engine", "--plugins", tmp_path / "libnope.so")
    assert_one_line_error(result, "plugin library", "libnope.so does not exist", "cmake -S kernels")


def test_serialize_plugins_needs_a_plugin_library(tiny_onnx, tmp_path):
    result = run("build", tiny_onnx, "-o", tmp_path / "m.engine", "--serialize-plugins")
    assert_one_line_error(result, "--serialize-plugins needs the plugin library (--plugins)")


def test_build_with_a_zero_workspace(tiny_onnx, tmp_path):
    assert_one_line_error(run("build", tiny_onnx, "-o", tmp_path / "m.engine", "--workspace", "0"), "at least 1 MiB")


def test_build_to_a_folder(tiny_onnx, tmp_path):
    assert_one_line_error(run("build", tiny_onnx, "-o", tmp_path), "is a folder")


def test_build_and_run_help_show_an_example():
    for command in ("build", "run"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Example: tofu-edge " + command in result.stdout


def test_build_command_prints_the_sidecar_as_json(stub_trt, tiny_onnx_dynamic, tmp_path):
    result = CliRunner(env={"TOFU_EDGE_PLUGINS": None}).invoke(
        app, ["build", str(tiny_onnx_dynamic), "-o", str(tmp_path / "m.engine"), "--fp16", "--max-batch", "4", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["precision"] == "fp16" and data["batch_profile"] == {"min": 1, "opt": 4, "max": 4}


def test_build_command_summary(stub_trt, tiny_onnx, tmp_path):
    result = CliRunner(env={"TOFU_EDGE_PLUGINS": None}).invoke(
        app, ["build", str(tiny_onnx), "-o", str(tmp_path / "m.engine")]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"wrote {tmp_path / 'm.engine'} (") and "m.engine.json" in lines[0]
    assert lines[1] == "TensorRT 10.99.0-stub, fp32 (TF32 allowed), static batch"
    assert lines[2] == "input  images [1, 3, 32, 32] float32"
