"""`tofu-edge bench` through typer's CliRunner: JSON lines, the table, the sweep plot, one-line errors.

DeiT-Ti at 32 px has 5 tokens, so the blocks can remove 1, 1 and 1 token before only the class token and one
other are left: ``--r 1 --clamp`` is the schedule these tests fuse with. Eager torch keeps them fast.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tofu_edge.cli import app

MODEL = ["deit_tiny_patch16_224", "--img-size", "32"]
FAST = ["--warmup", "1", "--iterations", "3", "--threads", "1"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

runner = CliRunner()


def bench(*args):
    return runner.invoke(app, ["bench", *args])


def test_json_lines_hold_a_header_and_one_line_per_variant_on_stdout_and_in_the_file(tmp_path):
    output = tmp_path / "out" / "bench.jsonl"
    result = bench(*MODEL, "--r", "1", "--clamp", *FAST, "--batch", "2", "--json", "--output", str(output))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert output.read_text() == result.stdout
    header, unfused, fused = lines
    assert header["type"] == "environment" and header["backend"] == "torch" and header["batch"] == 2
    assert header["input_shape"] == [2, 3, 32, 32] and header["timing"]["iterations"] == 3 and header["threads"] == 1
    assert (unfused["variant"], fused["variant"]) == ("unfused", "mlerp r=1")
    assert unfused["speedup"] == 1.0 and unfused["r_schedule"] == [0] * 12 and unfused["config"] is None
    assert fused["r_schedule"][:4] == [1, 1, 1, 0] and fused["gmacs"] < unfused["gmacs"] == fused["unfused_gmacs"]
    assert set(fused["stats"]) == {"samples", "median_ms", "p90_ms", "p99_ms", "min_ms", "mean_ms", "images_per_s"}
    assert fused["stats"]["samples"] == 3 and fused["config"]["clamp"] is True


def test_the_step_backend_can_be_forced_and_is_recorded():
    result = bench(*MODEL, "--r", "1", "--clamp", *FAST, "--step", "torch", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["fusion_step"] == "torch"


def test_sweep_prints_a_table_and_writes_a_png(tmp_path):
    plot = tmp_path / "speed.png"
    result = bench(*MODEL, "--sweep", "r=0,1", "--clamp", *FAST, "--plot", str(plot))
    assert result.exit_code == 0, result.output
    rows = [[cell.strip() for cell in line.strip("│").split("│")] for line in result.stdout.splitlines() if "│" in line]
    assert [row[0] for row in rows] == ["unfused", "mlerp r=1"]
    assert rows[0][-2:] == ["1.00x", "1.00x"] and rows[1][-1] == "2.08x"  # speed-up, FLOPs-ideal
    assert float(rows[1][2]) < float(rows[0][2])  # GMACs
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    assert f"wrote {plot}" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["deit_tny_patch16_224"], "error: unknown model 'deit_tny_patch16_224'"),
        ([*MODEL, "--r", "1"], "error: block 3: r=1 is more than it can remove (0)"),
        ([*MODEL, "--sweep", "r=1,x"], "error: --sweep takes r=INT,INT,... or keep=FRACTION"),
        ([*MODEL, "--sweep", "r=0,1", "--r", "1"], "error: give --sweep or --r/--keep, not both"),
        ([*MODEL, "--backend", "tensorrt"], "error: TensorRT 10 is not installed"),
        ([*MODEL, "--backend", "onnxruntime", "--ort-provider", "cuda"], "error: onnxruntime"),
        ([*MODEL, "--device", "cuda"], "error: --device cuda: torch sees no CUDA device"),
        ([*MODEL, "--backend", "onnxruntime", "--step", "torch"], "error: --step applies to the torch backend"),
        ([*MODEL, "--step", "cuda"], ""),
        (["missing.onnx"], "error: missing.onnx does not exist"),
        (["missing.engine", "--r", "8"], "error: missing.engine is a model file"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(args, message):
    result = bench(*args)
    assert result.exit_code == 2, result.output
    if not message:  # typer's own refusal of a value outside a closed choice
        assert "Invalid value for '--step'" in result.stderr
        return
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_help_has_an_example():
    result = bench("--help")
    assert result.exit_code == 0 and "Example: tofu-edge bench" in result.stdout


@pytest.mark.slow
def test_onnxruntime_backend_exports_and_times_both_variants(tmp_path):
    result = bench(*MODEL, "--backend", "onnxruntime", "--r", "1", "--clamp", *FAST, "--json")
    assert result.exit_code == 0, result.output
    header, *rows = (json.loads(line) for line in result.stdout.splitlines())
    assert header["ort_provider"] == "cpu" and [row["variant"] for row in rows] == ["unfused", "mlerp r=1"]
