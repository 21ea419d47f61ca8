"""`tofu-edge export`: the report as JSON, parity failures, and bad input and checkpoints as one-line errors."""

import json
import pickle

import pytest
import torch
from typer.testing import CliRunner

from tests.export.test_export_onnx import small_state_dict
from tofu_edge.cli import app

runner = CliRunner()


def test_cli_parity_failure_exits_1(tmp_path):
    result = runner.invoke(
        app,
        [
            "export",
            "deit_tiny_patch16_224",
            "-o",
            str(tmp_path / "m.onnx"),
            "--img-size",
            "32",
            "--r",
            "1,1",
            "--min-cosine",
            "1.0",
        ],
    )
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: m.onnx: onnxruntime vs PyTorch parity out of tolerance")
    assert list(tmp_path.iterdir()) == []


def test_cli_prints_the_report_as_json(tmp_path):
    result = runner.invoke(
        app,
        [
            "export",
            "deit_tiny_patch16_224",
            "-o",
            str(tmp_path / "m.onnx"),
            "--img-size",
            "32",
            "--r",
            "1,1,1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # 4 patches + class token: 5 -> 4 -> 3 -> 2
    assert report["parity"]["passed"] and report["plan"]["tokens_out"] == 2
    assert (tmp_path / "m.onnx").is_file() and (tmp_path / "m.json").is_file()


# --- bad input: one line, exit 2, nothing written -------------------------------------------------


def assert_usage_error(result, message, folder):
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert not [p for p in folder.rglob("*") if p.is_file()]


def test_unknown_model(tmp_path):
    result = runner.invoke(app, ["export", "deit_smal", "-o", str(tmp_path / "m.onnx")])
    assert_usage_error(result, "unknown model 'deit_smal'", tmp_path)


def test_impossible_schedule(tmp_path):
    result = runner.invoke(app, ["export", "deit_small_patch16_224", "-o", str(tmp_path / "m.onnx"), "--r", "16"])
    assert_usage_error(result, "block 11: r=16 is more than it can remove", tmp_path)


def test_unsupported_opset(tmp_path):
    result = runner.invoke(app, ["export", "deit_small_patch16_224", "-o", str(tmp_path / "m.onnx"), "--opset", "16"])
    assert_usage_error(result, "opset 16 is not supported", tmp_path)


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["export", "deit_small_patch16_224", "-o", str(blocker / "m.onnx")])
    assert result.exit_code == 2 and result.stderr.startswith("error: cannot create the folder of")


def cli_with_checkpoint(tmp_path, checkpoint):
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "export",
            "deit_tiny_patch16_224",
            "--img-size",
            "32",
            "-o",
            str(out / "m.onnx"),
            "--checkpoint",
            str(checkpoint),
        ],
    )
    return result, out


def test_missing_checkpoint(tmp_path):
    result, out = cli_with_checkpoint(tmp_path, tmp_path / "nope.pth")
    assert_usage_error(result, f"checkpoint {tmp_path / 'nope.pth'} does not exist", out)


def test_corrupt_checkpoint(tmp_path):
    with open(tmp_path / "plain.pkl", "wb") as handle:
        pickle.dump({"model": NotAStateDict()}, handle)  # not a torch file: never unpickled
    for name in ("bad.pth", "bad.safetensors", "plain.pkl"):
        (tmp_path / name).write_bytes(b"\x00garbage" * 10)
        result, out = cli_with_checkpoint(tmp_path, tmp_path / name)
        assert_usage_error(result, f"checkpoint {tmp_path / name} is not a readable", out)


def test_mismatched_checkpoint_lists_the_keys(tmp_path):
    state = small_state_dict()
    del state["head.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["blocks.0.mlp.fc1.bias"] = torch.zeros(3)
    torch.save(state, tmp_path / "w.pth")
    result, out = cli_with_checkpoint(tmp_path, tmp_path / "w.pth")
    assert_usage_error(
        result,
        "checkpoint w.pth does not fit the model: missing (1): head.weight; "
        "unexpected (1): extra.weight; shape mismatch (1): blocks.0.mlp.fc1.bias [3] vs [768]",
        out,
    )


class NotAStateDict:
    pass


def test_pickle_that_is_not_a_state_dict(tmp_path):
    torch.save({"model": NotAStateDict()}, tmp_path / "obj.pth")
    result, out = cli_with_checkpoint(tmp_path, tmp_path / "obj.pth")
    assert_usage_error(result, f"checkpoint {tmp_path / 'obj.pth'} holds objects other than tensors", out)
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    result, out = cli_with_checkpoint(tmp_path, tmp_path / "meta.pth")
    assert_usage_error(result, f"checkpoint {tmp_path / 'meta.pth'} is not a state dict", out)


def test_unknown_flavor_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["export", "deit_tiny_patch16_224", "-o", str(tmp_path / "m.onnx"), "--flavor", "x"])
    assert result.exit_code == 2 and "Invalid value for '--flavor'" in result.stderr


def _tensorrt_rtx_installed() -> bool:
    from tofu_edge.engine import tensorrt_rtx_available

    return tensorrt_rtx_available()


MAX_LAYERS_PER_STEP = 120  # TensorRT-RTX layers one portable fusion step may add (a transformer block is ~133)


@pytest.mark.skipif(not _tensorrt_rtx_installed(), reason="tensorrt-rtx is not installed")
def test_tensorrt_rtx_check_counts_layers_per_step_into_the_report(tmp_path):
    args = ["export", "deit_tiny_patch16_224", "--img-size", "32", "--r", "1,1,1", "-o", str(tmp_path / "m.onnx")]
    result = runner.invoke(app, [*args, "--tensorrt-rtx", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)["tensorrt_rtx"]
    assert printed == json.loads((tmp_path / "m.json").read_text())["tensorrt_rtx"]
    assert printed["ok"] and printed["built"] and printed["compute_capability"] == "SM89"
    steps = printed["step_layers"]
    assert steps["steps"] == 3 and steps["fused"] == printed["layers"] > steps["unfused"]
    assert 0 < steps["per_step"] <= MAX_LAYERS_PER_STEP
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx"]  # the twin went with its folder


def test_tensorrt_rtx_check_refuses_the_plugin_flavour(tmp_path):
    result = runner.invoke(
        app, ["export", "deit_tiny_patch16_224", "-o", str(tmp_path / "m.onnx"), "--flavor", "plugin", "--tensorrt-rtx"]
    )
    assert_usage_error(result, "--tensorrt-rtx checks the portable flavour", tmp_path)
