"""`tofu-edge diffusion`: token fusion for diffusers UNets and diffusion transformers (docs/diffusion.md).

A typer sub-app; ``tofu_edge.cli`` registers it with ``app.add_typer(diffusion_app, name="diffusion")``. diffusers is
imported when a command runs, so ``tofu-edge --help`` works without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tofu_edge.choices import Destinations
from tofu_edge.cli.errors import one_line_errors
from tofu_edge.cli.options import one_line_choice
from tofu_edge.config import StepOp
from tofu_edge.errors import ConfigError

__all__ = ["diffusion_app", "export_command", "parse_ratio"]

diffusion_app = typer.Typer(
    name="diffusion",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Token fusion for diffusers UNets (SD 1.x/2.x) and diffusion transformers (DiT, PixArt).",
)


@diffusion_app.callback()
def _group() -> None:
    """Token fusion for diffusers UNets (SD 1.x/2.x) and diffusion transformers (DiT, PixArt)."""


def parse_ratio(text: str) -> float | tuple[float, ...]:
    """``"0.5"`` -> 0.5 (the levels up to --max-downsample); ``"0.5,0.3"`` -> one ratio per level.

    Raises:
        ConfigError: not a number or a comma list of numbers.
    """
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--ratio takes a number or a comma list of numbers (one per level), got {text!r}") from None
    return values[0] if len(values) == 1 else values


def export_command(
    model: Annotated[
        str,
        typer.Argument(
            help="A preset with random weights (sd15-unet, sd21-unet, dit-s2, tiny-unet, tiny-dit, tiny-pixart) "
            "or a local diffusers model folder.",
            show_default=False,
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .onnx file (report: same stem, .json).")],
    ratio: Annotated[
        str, typer.Option(help="Fraction of tokens merged: one number, or a comma list with one ratio per level.")
    ] = "0.5",
    op: Annotated[
        StepOp, typer.Option(help="mean (tomesd's), mlerp or prune.", parser=one_line_choice(StepOp, "op"))
    ] = StepOp.MEAN,  # DiffusionFusionConfig's DEFAULT_OP (importing it needs diffusers)
    max_downsample: Annotated[
        int | None,
        typer.Option(
            help="With one --ratio: fuse levels downsampled at most this much (1, 2, 4, 8).", show_default=False
        ),
    ] = None,
    sx: Annotated[int, typer.Option(help="Destination cell width in tokens.")] = 2,
    sy: Annotated[int, typer.Option(help="Destination cell height in tokens.")] = 2,
    destinations: Annotated[
        Destinations,
        typer.Option(
            help="cycle (a fixed dither moving per block) or corner.",
            parser=one_line_choice(Destinations, "destinations"),
        ),
    ] = Destinations.CYCLE,
    merge_attn: Annotated[bool, typer.Option(help="Fuse self-attention.")] = True,
    merge_crossattn: Annotated[bool, typer.Option(help="Fuse cross-attention queries.")] = False,
    merge_mlp: Annotated[bool, typer.Option(help="Fuse the feed-forward (worth it for DiT/PixArt).")] = False,
    sample_size: Annotated[
        int | None, typer.Option(help="Latent size (default: the model's config.sample_size).", show_default=False)
    ] = None,
    batch: Annotated[int, typer.Option(help="Static batch (2 runs classifier-free guidance in one call).")] = 1,
    encoder_length: Annotated[
        int | None, typer.Option(help="Conditioning tokens (default 77 for UNets, 120 for PixArt).", show_default=False)
    ] = None,
    subfolder: Annotated[
        str | None, typer.Option(help="Model subfolder of a pipeline folder, e.g. unet.", show_default=False)
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of a preset's random weights (the same seed writes the same file; recorded).")
    ] = 0,
    opset: Annotated[int, typer.Option(help="ONNX opset: 18 (17 only where ONNX's converter can).")] = 18,
    parity_runs: Annotated[int, typer.Option(help="Random input sets checked against PyTorch.")] = 2,
    min_cosine: Annotated[float, typer.Option(help="Parity: lowest output cosine of any sample.")] = 0.999,
    tensorrt_rtx: Annotated[bool, typer.Option(help="Also parse and build with TensorRT-RTX on the CPU.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Fuse a diffusion model and export one denoising step to static-shape ONNX, parity-checked.

    Exits 1 when parity is out of tolerance (nothing is written), 2 on bad input.

    Example: tofu-edge diffusion export sd15-unet --ratio 0.5 --op mean -o out/sd15_unet.onnx
    """
    from tofu_edge.diffusion import DiffusionFusionConfig, export_onnx
    from tofu_edge.diffusion.models import PRESETS, create_diffusion_model
    from tofu_edge.export.parity import ParityTolerance

    config = DiffusionFusionConfig(
        ratio=parse_ratio(ratio),
        op=op,
        max_downsample=max_downsample,
        sx=sx,
        sy=sy,
        destinations=destinations,
        merge_attn=merge_attn,
        merge_crossattn=merge_crossattn,
        merge_mlp=merge_mlp,
    )
    tolerance = ParityTolerance(min_cosine=min_cosine, min_top1_agreement=0.0)
    report = export_onnx(
        create_diffusion_model(model, subfolder=subfolder, seed=seed),
        output,
        config,
        sample_size=sample_size,
        batch=batch,
        encoder_length=encoder_length,
        opset=opset,
        parity_runs=parity_runs,
        tolerance=tolerance,
        tensorrt_rtx=tensorrt_rtx,
        seed=seed if model in PRESETS else None,  # a folder's weights were loaded, not drawn
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    console = Console()
    written = [report.onnx_path, *([report.data_path] if report.data_path else []), report.report_path]
    console.print(f"wrote {', '.join(map(str, written))} in {report.seconds['total']:.1f} s")
    for level in report.plan.to_dict()["levels"]:
        modules = ", ".join(f"{count} {kind}" for kind, count in level["modules"].items())
        console.print(
            f"level {level['level']}: {level['grid'][0]}x{level['grid'][1]} tokens, r={level['r']} "
            f"({level['tokens']} -> {level['tokens'] - level['r']}) in {modules}"
        )
    table = Table(title="parity: onnxruntime vs PyTorch", title_justify="left")
    for column in ("inputs", "count", "max abs diff", "min cosine"):
        table.add_column(column, justify="left" if column == "inputs" else "right")
    for s in report.parity.sets:
        table.add_row(s.name, str(s.images), f"{s.max_abs:.2e}", f"{s.min_cosine:.6f}")
    console.print(table)
    if report.tensorrt_rtx:
        trt = report.tensorrt_rtx
        console.print(f"TensorRT-RTX {trt['tensorrt_rtx_version']}: parsed and built for {trt['compute_capability']}")
    console.print("parity: passed")


diffusion_app.command("export")(one_line_errors(export_command))
