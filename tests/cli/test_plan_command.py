"""`tofu-edge plan`: the JSON and the table, per-block lists and keep targets, one-line errors, the help."""

import json

import pytest
from typer.testing import CliRunner

from tofu_edge.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_plan_json_lists_every_block_and_the_totals():
    result = run("plan", "deit_small_patch16_224", "--r", "13", "--mode", "tofu", "--switch", "6", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [b["tokens_in"] for b in plan["blocks"]][:3] == [197, 184, 171]
    assert [b["mode"] for b in plan["blocks"]] == ["prune"] * 6 + ["mlerp"] * 6
    assert plan["tokens_out"] == 41
    assert round(plan["gmacs"], 2) == 2.71 and round(plan["unfused_gmacs"], 2) == 4.60


def test_plan_table_shows_totals_against_the_unfused_model():
    result = run("plan", "deit_small_patch16_224", "--r", "8", "--mode", "mean")
    assert result.exit_code == 0, result.output
    assert "3.421 GMACs vs 4.599 unfused" in result.stdout
    block_rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert len(block_rows) == 12 and "mean" in block_rows[0]


def test_plan_takes_a_per_block_list_and_a_keep_target():
    listed = json.loads(run("plan", "deit_small_patch16_224", "--r", "16,16,8", "--json").stdout)
    assert [b["r"] for b in listed["blocks"]][:4] == [16, 16, 8, 0]
    kept = json.loads(run("plan", "deit_small_patch16_224", "--keep", "0.7", "--json").stdout)
    assert kept["macs_ratio"] <= 0.7


@pytest.mark.parametrize(
    "args, message",
    [
        (["plan", "deit_smal"], "error: unknown model 'deit_smal'; did you mean"),
        (["plan", "swin_tiny_patch4_window7_224"], "error: swin_tiny_patch4_window7_224 is a SwinTransformer"),
        (["plan", "deit_small_patch16_224", "--r", "16"], "error: block 11: r=16 is more than it can remove (10)"),
        (["plan", "deit_small_patch16_224", "--r", "1,x"], "error: --r takes an int or a comma list of ints"),
        (["plan", "deit_small_patch16_224", "--keep", "0.01"], "error: keep=0.01 is out of reach"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_bad_mode_is_a_usage_error():
    result = run("plan", "deit_small_patch16_224", "--mode", "fast")
    assert result.exit_code == 2 and "Invalid value for '--mode'" in result.stderr


def test_default_mode_is_mlerp():
    plan = json.loads(run("plan", "deit_small_patch16_224", "--r", "8", "--json").stdout)
    assert {b["mode"] for b in plan["blocks"]} == {"mlerp"}


def test_help_has_an_example():
    assert "tofu-edge plan deit_small_patch16_224 --r 13" in run("plan", "--help").stdout


def test_plan_takes_per_block_ops_and_a_config_file(tmp_path):
    ops = ",".join(["prune"] * 2 + ["mlerp"] * 10)
    listed = json.loads(run("plan", "deit_small_patch16_224", "--r", "13", "--ops", ops, "--json").stdout)
    assert [b["mode"] for b in listed["blocks"]] == ops.split(",") and listed["config"]["mode"] == "per-block"
    path = tmp_path / "calibrated.json"
    path.write_text(json.dumps({"model": "deit_small_patch16_224", "config": listed["config"]}))
    from_file = json.loads(run("plan", "deit_small_patch16_224", "--config", path, "--json").stdout)
    assert from_file["blocks"] == listed["blocks"]
    refused = run("plan", "deit_small_patch16_224", "--config", path, "--r", "8")
    assert refused.exit_code == 2 and "leave out the other fusion options" in refused.output
