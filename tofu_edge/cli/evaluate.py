"""`tofu-edge eval`: accuracy of fused models against the unfused model on an ImageFolder dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tofu_edge.choices import Device, StepBackend
from tofu_edge.cli.build import PluginsOption
from tofu_edge.cli.options import (
    NO_FUSION_OPTIONS,
    CheckpointOption,
    FusionOptions,
    ImgSizeOption,
    ModelArg,
    StepOption,
    with_fusion_options,
)
from tofu_edge.errors import ConfigError
from tofu_edge.files import check_writable
from tofu_edge.measure.variants import parse_sweep

if TYPE_CHECKING:
    from tofu_edge.measure.accuracy import EvalReport

__all__ = ["eval_command", "render_eval"]


@with_fusion_options
def eval_command(
    model: ModelArg,
    data_dir: Annotated[
        Path,
        typer.Argument(
            help="ImageFolder dataset (one subfolder per class, sorted names = class indices), or a flat folder of "
            "unlabelled photos (agreement and cosine only)."
        ),
    ],
    fusion: FusionOptions = NO_FUSION_OPTIONS,
    img_size: ImgSizeOption = None,
    checkpoint: CheckpointOption = None,
    limit: Annotated[
        int | None, typer.Option(help="Evaluate at most N images (spread over the classes).", show_default=False)
    ] = None,
    batch: Annotated[int, typer.Option(help="Images per forward pass.", min=1)] = 8,
    sweep: Annotated[
        str | None,
        typer.Option(
            help="Evaluate several fusions: r=8,13 (constant r each) or keep=0.8,0.6; other options are shared.",
            show_default=False,
        ),
    ] = None,
    numeric_labels: Annotated[
        bool, typer.Option(help="Class folder names are the model's class indices (e.g. 0/, 207/).")
    ] = False,
    onnx: Annotated[
        Path | None,
        typer.Option(help="Evaluate this ONNX file (onnxruntime) against the unfused model.", show_default=False),
    ] = None,
    engine: Annotated[
        Path | None,
        typer.Option(help="Evaluate this TensorRT engine against the unfused model.", show_default=False),
    ] = None,
    plugins: PluginsOption = None,
    device: Annotated[Device, typer.Option(help="torch device of the PyTorch models (the reference included).")] = (
        Device.CPU
    ),
    step: StepOption = StepBackend.AUTO,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write an accuracy-vs-throughput PNG (Pareto view).", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Top-1/top-5 of fused models and the unfused model, and their agreement and output cosine with it.

    A flat folder of photos is enough: then only agreement and cosine are measured (cosine only for a model
    without a classifier, such as DINOv2).

    Preprocessing is timm's evaluation transform for the model's config. Images/s are measured during the
    evaluation (inference only): a rough figure; `tofu-edge bench` measures latency. Exits 2 on bad input.

    Example: tofu-edge eval deit_small_patch16_224 val/ --checkpoint w.safetensors --sweep r=0,8,13 --plot pareto.png
    """
    from tofu_edge.measure.accuracy import evaluate
    from tofu_edge.measure.plot import plot_pareto

    files = onnx is not None or engine is not None
    if files and (sweep is not None or fusion.schedule_given):
        raise ConfigError("--onnx/--engine evaluate that file as it was fused; leave out --r, --keep and --sweep")
    if files:
        fusion.refuse(fusion.given, "--onnx/--engine evaluate that file as it was fused; leave out the fusion options")
    if sweep is not None and fusion.schedule_given:
        raise ConfigError("give --sweep or --r/--keep, not both")
    if files:
        configs = []
    elif sweep is not None:
        configs = [variant.config for variant in parse_sweep(sweep, fusion.config()) if variant.config is not None]
    else:
        configs = [fusion.config()]
    if plot is not None and plot.suffix.lower() != ".png":
        raise ConfigError(f"--plot writes a PNG; give a .png name, got {plot}")
    if plot is not None:
        check_writable(plot)  # before the evaluation, not after it

    console = Console(stderr=True)
    columns = (TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("images", total=None)
        report = evaluate(
            model,
            data_dir,
            configs,
            img_size=img_size,
            checkpoint=checkpoint,
            limit=limit,
            batch=batch,
            numeric_labels=numeric_labels,
            onnx_path=onnx,
            engine_path=engine,
            plugins=plugins or None,
            device=device,
            step=step,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if plot is not None:
        plot_pareto(report, plot)
    result = report.to_dict() | ({"plot": str(plot)} if plot is not None else {})
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        render_eval(report, Console(), plot)


def render_eval(report: EvalReport, console: Console, plot: Path | None = None) -> None:
    """Print the table of variants, then a line on the throughput figure and the plot."""
    from tofu_edge.measure.accuracy import THROUGHPUT_NOTE

    reference = report.variants[0].metrics
    labels = f"{report.classes} classes" if report.classes else "unlabelled"
    if reference.top1_agreement is None:
        labels = "features, no classifier: cosine only"
    console.print(
        f"{report.model} {list(report.input_shape)} on {reference.images} images of {report.data_dir} "
        f"({labels}), batch {report.batch}"
    )
    table = Table(title_justify="left")
    columns = ("variant", "GMACs", "top-1 %", "top-5 %", "agree %", "cosine", "min cos", "img/s")
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right", no_wrap=column == "variant")
    unfused_macs = next((v.plan.unfused_macs for v in report.variants if v.plan is not None), None)
    for v in report.variants:
        m = v.metrics
        macs = v.plan.macs if v.plan is not None else unfused_macs if v.name == "unfused" else None
        table.add_row(
            v.name if v.backend == "pytorch" else f"{v.name} ({v.backend})",
            "" if macs is None else f"{macs / 1e9:.3f}",
            _percent(m.top1),
            _percent(m.top5),
            _percent(m.top1_agreement),
            f"{m.mean_cosine:.4f}",
            f"{m.min_cosine:.4f}",
            f"{m.images_per_s:.1f}",
        )
    console.print(table)
    console.print(THROUGHPUT_NOTE)
    if reference.top1 is None and reference.top1_agreement is not None:
        console.print("top-1/top-5: no labels (a flat folder); agreement and cosine compare with the unfused model")
    if plot is not None:
        console.print(f"wrote {plot}")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"
