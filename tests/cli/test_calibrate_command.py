"""`tofu-edge calibrate`: the switch as JSON and as a table, and bad input."""

import json

import pytest
from typer.testing import CliRunner

from tofu_edge.cli import app


def test_cli_prints_the_switch_and_json(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app, ["calibrate", "deit_tiny_patch16_224", "--img-size", "32", "--r", "1,1", "--limit", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    probe = json.loads(result.stdout)
    assert probe["images"] == 3 and len(probe["blocks"]) == 12 and 0 <= probe["switch"] <= 12
    table = runner.invoke(
        app, ["calibrate", "deit_tiny_patch16_224", "--img-size", "32", "--r", "1", "--limit", "2", "--clamp"]
    )
    assert table.exit_code == 0 and "--mode tofu --switch" in table.stdout


@pytest.mark.parametrize(
    "args, message",
    [(["no_such_vit"], "unknown model"), (["deit_tiny_patch16_224", "/nope"], "image folder /nope does not exist")],
)
def test_cli_bad_input(args, message):
    result = CliRunner().invoke(app, ["calibrate", *args])
    assert result.exit_code == 2 and message in result.stderr
