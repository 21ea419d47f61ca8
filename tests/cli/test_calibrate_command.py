"""`tofu-edge calibrate`: the switch or the per-block operations as a table, JSON and a config file for export, and
bad input."""

import json
import shlex

import pytest
from typer.testing import CliRunner

from tofu_edge.cli import app

MODEL = ["deit_tiny_patch16_224", "--img-size", "64"]  # 16 patches + the class token: r=2 fits blocks 0-6
SCHEDULE = ["--r", "2", "--clamp"]


def calibrate(*args: str):
    return CliRunner().invoke(app, ["calibrate", *MODEL, *SCHEDULE, "--limit", "2", *args])


def plan_json(*args: str) -> dict:
    result = CliRunner().invoke(app, ["plan", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cli_prints_the_switch_and_json(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app, ["calibrate", "deit_tiny_patch16_224", "--img-size", "32", "--r", "1,1", "--limit", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    probe = payload["calibration"]
    assert probe["images"] == 3 and len(probe["blocks"]) == 12 and 0 <= probe["switch"] <= 12
    assert payload["config"]["mode"] == "tofu" and payload["config"]["switch"] == probe["switch"]
    table = runner.invoke(
        app, ["calibrate", "deit_tiny_patch16_224", "--img-size", "32", "--r", "1", "--limit", "2", "--clamp"]
    )
    assert table.exit_code == 0 and "--mode tofu --switch" in table.stdout


def test_per_block_output_round_trips_through_plan_config(tmp_path):
    path = tmp_path / "calibration.json"
    result = calibrate("--method", "per-block", "--output", str(path))
    assert result.exit_code == 0, result.output
    written = json.loads(path.read_text())
    ops = written["config"]["ops"]
    assert written["config"]["mode"] == "per-block" and len(ops) == 12
    assert written["calibration"]["ops"] == ops and written["model"] == MODEL[0]
    plan = plan_json(*MODEL, "--config", str(path))
    assert [block["mode"] for block in plan["blocks"]] == ops
    assert plan["config"] == written["config"]


def test_printed_export_flags_give_the_written_config(tmp_path):
    path = tmp_path / "calibration.json"
    result = calibrate("--method", "per-block", "-o", str(path))
    flags_line = next(line for line in result.stdout.splitlines() if line.startswith("export with: "))
    words = shlex.split(flags_line.removeprefix("export with: "))
    assert words[:3] == ["tofu-edge", "export", MODEL[0]]
    assert plan_json(*words[2:])["config"] == json.loads(path.read_text())["config"]
    assert f"or: tofu-edge export {' '.join(MODEL)} --config {path}" in result.stdout


def test_switch_search_output_is_a_tofu_config(tmp_path):
    path = tmp_path / "switch.json"
    result = calibrate("--output", str(path))
    assert result.exit_code == 0, result.output
    config = json.loads(path.read_text())["config"]
    assert config["mode"] == "tofu" and config["switch"] == json.loads(path.read_text())["calibration"]["switch"]
    assert plan_json(*MODEL, "--config", str(path))["config"] == config


def test_schedule_from_a_config_file_is_kept_and_its_operations_replaced(tmp_path):
    source = tmp_path / "source.json"
    source.write_text(json.dumps({"r": 2, "clamp": True, "mode": "prune"}))
    result = CliRunner().invoke(
        app, ["calibrate", *MODEL, "--config", str(source), "--limit", "2", "--method", "per-block", "--json"]
    )
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout)["config"]
    assert config["r"] == 2 and config["clamp"] and config["mode"] == "per-block"


def test_unwritable_output_fails_before_calibrating(tmp_path):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    result = calibrate("--method", "per-block", "--output", str(folder))
    assert result.exit_code == 2 and "is a folder" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [(["no_such_vit"], "unknown model"), (["deit_tiny_patch16_224", "/nope"], "image folder /nope does not exist")],
)
def test_cli_bad_input(args, message):
    result = CliRunner().invoke(app, ["calibrate", *args])
    assert result.exit_code == 2 and message in result.stderr


def test_fusion_options_apply_to_the_default_schedule():
    result = CliRunner().invoke(
        app,
        ["calibrate", "deit_tiny_patch16_224", "--img-size", "32", "--limit", "2", "--clamp", "--method", "probe"]
        + ["--selection", "energy", "--json"],
    )
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout)["config"]
    assert config["r"] == 13 and config["clamp"] and config["selection"] == "energy" and config["mode"] == "tofu"
