"""`tofu-edge export`: fuse a timm ViT and write portable ONNX plus a JSON report, parity-checked; ``--int8``
quantizes its Linear layers for onnxruntime on CPUs or for TensorRT."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tofu_edge.choices import Flavor
from tofu_edge.cli.interrupts import Terminated
from tofu_edge.cli.options import (
    NO_FUSION_OPTIONS,
    CheckpointOption,
    FusionOptions,
    ImgSizeOption,
    ModelArg,
    with_fusion_options,
)
from tofu_edge.errors import ConfigError
from tofu_edge.export.quantize import Int8Config, Int8Recipe, Int8Target

if TYPE_CHECKING:
    from tofu_edge.export import ExportReport

__all__ = ["export_command", "render_export"]


@with_fusion_options
def export_command(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="The .onnx file to write (report: same stem, .json).")],
    fusion: FusionOptions = NO_FUSION_OPTIONS,
    img_size: ImgSizeOption = None,
    checkpoint: CheckpointOption = None,
    pretrained: Annotated[bool, typer.Option(help="timm's hub weights (needs a network).")] = False,
    seed: Annotated[
        int,
        typer.Option(
            help="Seed of the random weights (without --checkpoint or --pretrained): the same seed writes the same "
            "file; recorded in its metadata."
        ),
    ] = 0,
    batch: Annotated[int, typer.Option(help="Static batch size (the example batch with --dynamic-batch).")] = 1,
    dynamic_batch: Annotated[bool, typer.Option(help="Leave the batch axis dynamic.")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset: 17 or 18.")] = 17,
    parity_images: Annotated[
        Path | None,
        typer.Option(
            help="Folder of photographs for the parity check (default: foolbox's, if installed).", show_default=False
        ),
    ] = None,
    flavor: Annotated[
        Flavor, typer.Option(help="portable: standard ops only; plugin: fusion steps as TensorRT plugin nodes.")
    ] = Flavor.PORTABLE,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Quantize the Linear layers (qkv, proj, fc1, fc2) to INT8 for --int8-target; the fusion step, "
            "norms, softmax, residual adds and head stay float. The file written is the INT8 model.",
        ),
    ] = False,
    int8_target: Annotated[
        Int8Target | None,
        typer.Option(
            help="onnxruntime-cpu (default: dynamic U8S8) or tensorrt (symmetric Q/DQ, explicit quantization).",
            show_default=False,
        ),
    ] = None,
    int8_recipe: Annotated[
        Int8Recipe | None,
        typer.Option(help="Override the target's recipe (onnxruntime-cpu only).", show_default=False),
    ] = None,
    calibration_images: Annotated[
        Path | None,
        typer.Option(
            help="Folder of images for the INT8 activation ranges (default: foolbox's photos the parity check "
            "does not use).",
            show_default=False,
        ),
    ] = None,
    calibration_count: Annotated[
        int | None, typer.Option(help="At most N calibration images, a seeded draw (default 64).", show_default=False)
    ] = None,
    min_cosine: Annotated[
        float | None,
        typer.Option(
            help="Parity: lowest output cosine of any image (default 0.999; with --int8 it judges the INT8 model "
            "against the float fused model, default 0.98).",
            show_default=False,
        ),
    ] = None,
    min_top1: Annotated[
        float | None,
        typer.Option(
            help="Parity: lowest top-1 agreement of any image set (default 0.9; with --int8: INT8 vs float fused, "
            "default 0.5).",
            show_default=False,
        ),
    ] = None,
    tensorrt_rtx: Annotated[
        bool,
        typer.Option(
            "--tensorrt-rtx",
            help="Also parse and build the file with TensorRT-RTX on the CPU (pip install tensorrt-rtx) and count "
            "the TensorRT layers per fusion step against an unfused twin; both go into the report.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Export a fused timm ViT to static-shape ONNX and check it against PyTorch with onnxruntime.

    Exits 1 when parity is out of tolerance (nothing is written), 2 on bad input.

    Example: tofu-edge export deit_small_patch16_224 --r 13 --mode tofu --output out/deit_s_r13.onnx
    """
    from tofu_edge.export import ParityTolerance, export_onnx
    from tofu_edge.export.int8_export import INT8_TOLERANCE

    if tensorrt_rtx and flavor is not Flavor.PORTABLE:
        raise ConfigError("--tensorrt-rtx checks the portable flavour: TensorRT-RTX cannot load plugins")
    int8_config = _int8_config(int8, int8_target, int8_recipe, calibration_images, calibration_count)
    given = {"min_cosine": min_cosine, "min_top1_agreement": min_top1}
    base = INT8_TOLERANCE if int8_config is not None else ParityTolerance()
    tolerance = replace(base, **{key: value for key, value in given.items() if value is not None})
    if int8_config is not None:  # the tolerances judge the INT8 model; the float one keeps the defaults
        int8_config, tolerance = replace(int8_config, tolerance=tolerance), None
    console = Console(stderr=True)
    columns = (TextColumn("INT8 calibration"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    calibrated = int8_config is not None and int8_config.recipe.calibrated
    with Progress(*columns, console=console, transient=True, disable=not (calibrated and console.is_terminal)) as bar:
        task = bar.add_task("images", total=None, visible=False)
        report = export_onnx(
            model,
            output,
            fusion.config(),
            img_size=img_size,
            checkpoint=checkpoint,
            pretrained=pretrained,
            batch=batch,
            dynamic_batch=dynamic_batch,
            opset=opset,
            parity_images=parity_images,
            tolerance=tolerance,
            flavor=flavor,
            int8=int8_config,
            calibration_progress=lambda done, total: bar.update(task, completed=done, total=total, visible=True),
            seed=seed,
        )
    trt = None
    if tensorrt_rtx:
        from tofu_edge.measure.tensorrt_layers import check_export_with_tensorrt_rtx

        try:
            trt = check_export_with_tensorrt_rtx(report, checkpoint=checkpoint, img_size=img_size)
        except (KeyboardInterrupt, Terminated):  # the command did not finish: it leaves none of its outputs
            for path in (report.onnx_path, report.report_path):
                path.unlink(missing_ok=True)
            raise
    if as_json:
        typer.echo(json.dumps({**report.to_dict(), "tensorrt_rtx": trt}, indent=2))
    else:
        render_export(report, Console())
        if trt is not None:
            _render_tensorrt_rtx(trt, Console())


def render_export(report: ExportReport, console: Console) -> None:
    """Print what was written, the MACs and the parity table."""
    plan = report.plan
    console.print(f"wrote {report.onnx_path} and {report.report_path} in {report.seconds['total']:.1f} s")
    console.print(
        f"{report.model} {list(report.input_shape)}, {report.flavor.value} opset {report.opset}, "
        f"r={list(plan.r_schedule)}, "
        f"{plan.config.mode.value}: {plan.macs / 1e9:.3f} GMACs vs {plan.unfused_macs / 1e9:.3f} unfused "
        f"(ideal speed-up {plan.unfused_macs / plan.macs:.2f}x)"
    )
    table = Table(title="parity: onnxruntime vs PyTorch", title_justify="left")
    for column in ("images", "count", "max abs diff", "min cosine", "top-1 agreement"):
        table.add_column(column, justify="left" if column == "images" else "right")
    for s in report.parity.sets:
        table.add_row(s.name, str(s.images), f"{s.max_abs:.2e}", f"{s.min_cosine:.6f}", f"{s.top1_agreement:.2f}")
    console.print(table)
    console.print("parity: passed" if report.parity.passed else "parity: FAILED")
    if report.int8 is not None:
        _render_int8(report, console)


def _render_tensorrt_rtx(trt: dict, console: Console) -> None:
    """One line: did TensorRT-RTX parse and build it, its layers, and the layers per fusion step."""
    status = "parsed and built" if trt["ok"] else f"FAILED: {trt['errors'][0] if trt['errors'] else 'no engine'}"
    line = f"TensorRT-RTX {trt['tensorrt_rtx_version']} ({trt['compute_capability']}): {status}, {trt['layers']} layers"
    steps = trt["step_layers"]
    if steps is not None:
        line += f", {steps['per_step']:.0f} per fusion step ({steps['steps']} steps; unfused twin {steps['unfused']})"
    console.print(line)


def _int8_config(
    int8: bool,
    target: Int8Target | None,
    recipe: Int8Recipe | None,
    images: Path | None,
    count: int | None,
) -> Int8Config | None:
    """The `Int8Config` of the INT8 options, ``None`` without ``--int8`` (where the other INT8 options are refused)."""
    if not int8:
        given = {"--int8-target": target, "--int8-recipe": recipe, "--calibration-images": images}
        given["--calibration-count"] = count
        named = [name for name, value in given.items() if value is not None]
        if named:
            raise ConfigError(f"{named[0]} applies to INT8 export only; add --int8")
        return None
    return Int8Config(
        target=target or Int8Target.ORT_CPU, recipe=recipe, calibration_images=images, calibration_count=count
    )


def _render_int8(report: ExportReport, console: Console) -> None:
    """The INT8 recipe, calibration and its parity against the float fused and the unfused float model."""
    int8 = report.int8
    config, calibration = int8.config, int8.calibration
    console.print(
        f"INT8 for {config.target.value}: {config.recipe.value}, {len(int8.layers)} Linear layers quantized "
        f"(activations {config.recipe.activations}); float: {config.to_dict()['kept_float']}"
    )
    if calibration is not None:
        console.print(f"calibration: {calibration.count} images ({calibration.asked} asked) from {calibration.source}")
    table = Table(title="INT8 vs float fused (judged) and vs unfused float", title_justify="left")
    for column in ("images", "max abs diff", "min cosine", "top-1 agreement", "vs unfused: min cosine", "top-1"):
        table.add_column(column, justify="left" if column == "images" else "right")
    for s, u in zip(int8.parity.sets, int8.vs_unfused, strict=True):
        table.add_row(
            s.name, f"{s.max_abs:.2e}", f"{s.min_cosine:.5f}", f"{s.top1_agreement:.2f}", f"{u.min_cosine:.5f}",
            f"{u.top1_agreement:.2f}",
        )  # fmt: skip
    console.print(table)
    console.print("INT8 parity: passed" if int8.parity.passed else "INT8 parity: FAILED")
