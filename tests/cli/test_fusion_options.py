"""The fusion options are made from the `FusionConfig` fields: every field is an option of every command that fuses,
reaches the config, `export_flags` and the variant names by itself, and an option next to ``--config`` (or one a
command cannot apply) is refused in one line, never dropped."""

from __future__ import annotations

import dataclasses
import json
import shlex

import pytest
import typer
from typer.testing import CliRunner

from tofu_edge.cli import app
from tofu_edge.cli.options import export_flags
from tofu_edge.config import FusionConfig, config_fields
from tofu_edge.measure.variants import parse_sweep, variant_name

MODEL = "deit_small_patch16_224"
FUSING_COMMANDS = ("plan", "export", "calibrate", "bench", "eval", "visualize")
# one value other than the default for every field, as the command line gives it and as the config holds it
SAMPLES = {
    "r": (["--r", "16,16,8"], (16, 16, 8)),
    "mode": (["--mode", "mean"], "mean"),
    "switch": (["--mode", "tofu", "--switch", "2"], 2),
    "prop_attn": (["--no-prop-attn"], False),
    "inflection": (["--r", "8", "--inflection", "-0.5"], -0.5),
    "keep": (["--keep", "0.6"], 0.6),
    "clamp": (["--clamp"], True),
    "ops": (["--r", "1", "--ops", ",".join(["prune"] * 2 + ["mlerp"] * 10)], ("prune",) * 2 + ("mlerp",) * 10),
    "align": (["--r", "8", "--align", "8"], 8),
    "selection": (["--selection", "energy"], "energy"),
}


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def plan_config(*args) -> dict:
    result = run("plan", MODEL, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["config"]


def test_every_field_has_a_sample_here():
    assert set(SAMPLES) == {field.name for field, _ in config_fields()}


@pytest.mark.parametrize("command", FUSING_COMMANDS)
def test_every_field_is_an_option_of_every_fusing_command(command):
    params = {p.name for p in typer.main.get_command(app).commands[command].params}
    assert {field.name for field, _ in config_fields()} | {"config_file"} <= params


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_option_reaches_the_config(name):
    args, value = SAMPLES[name]
    assert getattr(FusionConfig.from_dict(plan_config(*args)), name) == value


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_printed_flags_give_the_config_back(name):
    config = FusionConfig.from_dict(plan_config(*SAMPLES[name][0]))
    assert FusionConfig.from_dict(plan_config(*shlex.split(export_flags(config)))) == config


@pytest.mark.parametrize("field", [field for field, text in config_fields() if text.named], ids=lambda f: f.name)
def test_a_named_field_tells_variants_apart(field):
    config = FusionConfig.from_dict(plan_config(*SAMPLES[field.name][0]))
    assert variant_name(config) != variant_name(dataclasses.replace(config, **{field.name: field.default}))


def test_names_stay_as_they_were_for_the_defaults_and_unnamed_fields():
    assert variant_name(FusionConfig(r=13)) == "mlerp r=13"
    assert variant_name(FusionConfig(r=8, mode="mean", clamp=True)) == "mean r=8"
    assert variant_name(FusionConfig(keep=0.6, mode="tofu", switch=1)) == "tofu keep=0.6 switch=1"
    assert variant_name(FusionConfig(r=4, inflection=-0.5)) == "mlerp r=4 inflection=-0.5"
    assert variant_name(FusionConfig(r=(2, 1), ops=("prune", "mlerp"))) == "per-block r=2,1"
    assert variant_name(FusionConfig(r=8, selection="attention", prop_attn=False)) == (
        "mlerp r=8 no-prop-attn selection=attention"
    )


def _command_args(command: str, tmp_path) -> list:
    return {
        "plan": [MODEL],
        "export": [MODEL, "-o", tmp_path / "m.onnx"],
        "calibrate": [MODEL],
        "bench": [MODEL],
        "eval": [MODEL, tmp_path],
        "visualize": [MODEL, tmp_path / "photo.jpg", "-o", tmp_path / "out.png"],
    }[command]


@pytest.mark.parametrize("command", FUSING_COMMANDS)
@pytest.mark.parametrize("option", [["--r", "8"], ["--mode", "mlerp"], ["--prop-attn"], ["--selection", "bipartite"]])
def test_an_option_next_to_config_is_refused_even_at_its_default(tmp_path, command, option):
    path = tmp_path / "fusion.json"
    path.write_text(json.dumps(FusionConfig(r=2).to_dict()))
    result = run(command, *_command_args(command, tmp_path), "--config", path, *option)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: --config FILE holds the whole fusion config; leave out the other fusion")
    assert result.stderr.count("\n") == 1 and option[0] in result.stderr
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["calibrate", MODEL, "--r", "8", "--mode", "tofu"], "error: calibrate chooses the step operations"),
        (["calibrate", MODEL, "--switch", "2"], "error: calibrate chooses the step operations"),
        (["bench", MODEL, "--clamp"], "error: without --r, --keep or --sweep only the unfused model is timed"),
        (["bench", MODEL, "--sweep", "keep=0.8", "--inflection", "-0.5"], "error: --sweep keep=... sets MACs targets"),
        (["eval", MODEL, ".", "--sweep", "keep=0.8", "--inflection", "-0.5"], "error: --sweep keep=... sets MACs"),
    ],
)
def test_an_option_the_command_cannot_apply_is_refused(args, message):
    result = run(*args)
    assert result.exit_code == 2 and result.stderr.startswith(message), result.output
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["bench", "eval"])
def test_fusion_options_for_a_model_file_are_refused(tmp_path, command):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    args = ["bench", model] if command == "bench" else ["eval", MODEL, tmp_path, "--onnx", model]
    result = run(*args, "--selection", "energy")
    assert result.exit_code == 2 and "--selection" in result.stderr and result.stderr.count("\n") == 1


def test_sweep_keeps_the_other_options():
    variants = parse_sweep("r=8", FusionConfig(selection="energy", align=8))
    assert variants[1].config == FusionConfig(r=8, selection="energy", align=8)
    assert variants[1].name == "mlerp r=8 align=8 selection=energy"
