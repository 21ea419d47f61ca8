"""`--selection` on the CLI: the plan shows what each block protects; bad values and impossible uses are one line."""

import json

from typer.testing import CliRunner

from tofu_edge.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_plan_shows_the_selection_and_the_protected_tokens():
    result = run("plan", "deit_small_patch16_224", "--r", "13", "--selection", "energy", "--json")
    assert result.exit_code == 0, result.output
    blocks = json.loads(result.stdout)["blocks"]
    assert blocks[0]["selection"] == "energy" and blocks[0]["protect"] == 10  # 10 % of |A| = 98
    table = run("plan", "deit_small_patch16_224", "--r", "13", "--selection", "attention")
    assert "mlerp fusion, attention selection" in table.stdout and "protected" in table.stdout


def test_bad_selection_and_attention_without_a_class_token_are_refused():
    bad = run("plan", "deit_small_patch16_224", "--r", "13", "--selection", "pitome")
    assert bad.exit_code == 2 and "pitome" in bad.output
    headless = run("plan", "vit_medium_patch16_gap_256", "--r", "8", "--selection", "attention")
    assert headless.exit_code == 2
    assert headless.output.strip().splitlines() == [
        "error: selection=attention follows the class token's attention, and vit_medium_patch16_gap_256 has no "
        "class token; use selection=energy or bipartite"
    ]


def test_export_refuses_a_selection_in_the_plugin_flavour(tmp_path):
    result = run(
        "export", "vit_tiny_patch16_224", "--img-size", "64", "--r", "1", "--selection", "energy",
        "--flavor", "plugin", "-o", tmp_path / "m.onnx",
    )  # fmt: skip
    assert result.exit_code != 0 and "run selection=bipartite" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
