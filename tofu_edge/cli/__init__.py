"""The `tofu-edge` command line: thin commands that parse, call one library function and render."""

from __future__ import annotations

import typer

from tofu_edge.cli.bench import bench_command
from tofu_edge.cli.build import build_command
from tofu_edge.cli.calibrate import calibrate_command
from tofu_edge.cli.diffusion import diffusion_app
from tofu_edge.cli.errors import one_line_errors
from tofu_edge.cli.evaluate import eval_command
from tofu_edge.cli.export import export_command
from tofu_edge.cli.plan import plan_command
from tofu_edge.cli.run import run_command
from tofu_edge.cli.tune import tune_command
from tofu_edge.cli.visualize import visualize_command

__all__ = ["app", "main"]

app = typer.Typer(
    name="tofu-edge",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("plan")(one_line_errors(plan_command))
app.command("export")(one_line_errors(export_command))
app.command("calibrate")(one_line_errors(calibrate_command))
app.command("build")(one_line_errors(build_command))
app.command("run")(one_line_errors(run_command))
app.command("bench")(one_line_errors(bench_command))
app.command("eval")(one_line_errors(eval_command))
app.command("visualize")(one_line_errors(visualize_command))
app.command("tune")(one_line_errors(tune_command))
app.add_typer(diffusion_app, name="diffusion")


@app.callback()
def _root() -> None:
    """Token Fusion for timm Vision Transformers: plan, export and benchmark static-shape fused models."""


def main() -> None:
    """Console-script entry point."""
    app()
