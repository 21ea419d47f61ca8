"""`tofu-edge export`: fuse a timm ViT and write portable ONNX plus a JSON report, parity-checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from tofu_edge.choices import Flavor
from tofu_edge.cli.options import (
    NO_FUSION_OPTIONS,
    CheckpointOption,
    FusionOptions,
    ImgSizeOption,
    ModelArg,
    with_fusion_options,
)

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
    min_cosine: Annotated[float, typer.Option(help="Parity: lowest output cosine of any image.")] = 0.999,
    min_top1: Annotated[float, typer.Option(help="Parity: lowest top-1 agreement of any image set.")] = 0.9,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Export a fused timm ViT to static-shape ONNX and check it against PyTorch with onnxruntime.

    Exits 1 when parity is out of tolerance (nothing is written), 2 on bad input.

    Example: tofu-edge export deit_small_patch16_224 --r 13 --mode tofu --output out/deit_s_r13.onnx
    """
    from tofu_edge.export import ParityTolerance, export_onnx

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
        tolerance=ParityTolerance(min_cosine=min_cosine, min_top1_agreement=min_top1),
        flavor=flavor,
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        render_export(report, Console())


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
