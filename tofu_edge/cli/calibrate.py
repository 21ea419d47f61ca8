"""`tofu-edge calibrate`: choose the ToFu switch block of a model from a per-block linearity probe."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from tofu_edge.choices import CalibrationMethod
from tofu_edge.cli.options import (
    NO_FUSION_OPTIONS,
    CheckpointOption,
    FusionOptions,
    ImgSizeOption,
    ModelArg,
    with_fusion_options,
)
from tofu_edge.config import FusionConfig, Mode
from tofu_edge.errors import TofuError

if TYPE_CHECKING:
    from tofu_edge.calibrate import Calibration

__all__ = ["calibrate_command"]

DEFAULT_CALIBRATION_R = 13


@with_fusion_options
def calibrate_command(
    model: ModelArg,
    images: Annotated[
        Path | None,
        typer.Argument(
            help="Folder of calibration photos (default: foolbox's ImageNet samples, if installed).", show_default=False
        ),
    ] = None,
    fusion: FusionOptions = NO_FUSION_OPTIONS,
    img_size: ImgSizeOption = None,
    checkpoint: CheckpointOption = None,
    limit: Annotated[int, typer.Option(help="Calibration images to use.", min=1)] = 16,
    method: Annotated[
        CalibrationMethod,
        typer.Option(help="search: try every switch end to end (L + 1 passes); probe: per-block probe only."),
    ] = CalibrationMethod.SEARCH,
    as_json: Annotated[bool, typer.Option("--json", help="Print the probe as JSON.")] = False,
) -> None:
    """Choose the ToFu switch block (prune below it, MLERP from it) of a model on real images.

    The schedule comes from --r or --keep (default --r 13); --mode and --switch are what it chooses.

    Example: tofu-edge calibrate deit_small_patch16_224 photos/ --r 13 --checkpoint weights.safetensors
    """
    from tofu_edge.calibrate import calibrate_switch
    from tofu_edge.checkpoint import load_checkpoint
    from tofu_edge.images import bundled_photo_folder, photo_images
    from tofu_edge.models import create_model

    schedule = fusion if fusion.schedule_given else dataclasses.replace(fusion, r=str(DEFAULT_CALIBRATION_R))
    config = dataclasses.replace(schedule.config(), mode=Mode.TOFU)
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
        _render(result, model, config, Console())


def _render(result: Calibration, model: str, config: FusionConfig, console: Console) -> None:
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
    schedule = f"--keep {config.keep}" if config.keep is not None else f"--r {_r_text(config.r)}"
    command = f"tofu-edge export {model} {schedule} --mode tofu --switch {result.switch}"
    typer.echo(f"switch = {result.switch} ({result.method}): {command}")


def _r_text(r: int | tuple[int, ...]) -> str:
    return str(r) if isinstance(r, int) else ",".join(map(str, r))
