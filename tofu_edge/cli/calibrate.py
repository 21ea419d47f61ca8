"""`tofu-edge calibrate`: choose the ToFu switch block of a model from a per-block linearity probe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tofu_edge.calibrate import Calibration, calibrate_switch
from tofu_edge.checkpoint import load_checkpoint
from tofu_edge.cli.options import ClampOption, ImgSizeOption, InflectionOption, ModelArg, ROption, fusion_config
from tofu_edge.config import Mode
from tofu_edge.errors import TofuError
from tofu_edge.images import bundled_photo_folder, photo_images
from tofu_edge.models import create_model

__all__ = ["calibrate_command"]


def calibrate_command(
    model: ModelArg,
    images: Annotated[
        Path | None,
        typer.Argument(
            help="Folder of calibration photos (default: foolbox's ImageNet samples, if installed).", show_default=False
        ),
    ] = None,
    r: ROption = "13",
    inflection: InflectionOption = 0.0,
    clamp: ClampOption = False,
    img_size: ImgSizeOption = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Weights: .safetensors or a torch state dict.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(help="Calibration images to use.", min=1)] = 16,
    method: Annotated[
        str, typer.Option(help="search: try every switch end to end (L + 1 passes); probe: per-block probe only.")
    ] = "search",
    as_json: Annotated[bool, typer.Option("--json", help="Print the probe as JSON.")] = False,
) -> None:
    """Choose the ToFu switch block (prune below it, MLERP from it) of a model on real images.

    Example: tofu-edge calibrate deit_small_patch16_224 photos/ --r 13 --checkpoint weights.safetensors
    """
    config = fusion_config(r, Mode.TOFU, None, inflection, None, clamp, True)
    network = create_model(model, img_size=img_size)
    if checkpoint is not None:
        load_checkpoint(network, checkpoint)
    folder = images or bundled_photo_folder()
    if folder is None:
        raise TofuError("give a folder of calibration photos (or install foolbox for its ImageNet samples)")
    pattern = "imagenet_*" if images is None else "*"
    result = calibrate_switch(network, photo_images(network, folder, limit=limit, pattern=pattern), config, method)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _render(result, model, r, Console())


def _render(result: Calibration, model: str, r: str, console: Console) -> None:
    table = Table(title=f"{model}: probe per block ({result.images} images)", title_justify="left")
    for column in ("block", "r", "merge error", "prune error"):
        table.add_column(column, justify="right")
    for p in result.probes:
        table.add_row(str(p.index), str(p.r), f"{p.merge_error:.4f}", f"{p.prune_error:.4f}")
    console.print(table)
    if result.search_cosines is not None:
        scores = ", ".join(f"{s}: {c:.5f}" for s, c in enumerate(result.search_cosines))
        console.print(f"output cosine to the unfused model by switch: {scores}")
    console.print(f"probe alone would pick switch {result.probe_switch}")
    command = f"tofu-edge export {model} --r {r} --mode tofu --switch {result.switch}"
    typer.echo(f"switch = {result.switch} ({result.method}): {command}")
