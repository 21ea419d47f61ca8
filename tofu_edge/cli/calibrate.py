"""`tofu-edge calibrate`: choose the ToFu switch block, or every block's step operation, of a model on real images."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tofu_edge.choices import CalibrationMethod
from tofu_edge.cli.options import (
    NO_FUSION_OPTIONS,
    CheckpointOption,
    FusionOptions,
    ImgSizeOption,
    ModelArg,
    export_flags,
    with_fusion_options,
)
from tofu_edge.config import Mode
from tofu_edge.errors import TofuError

if TYPE_CHECKING:
    from tofu_edge.calibrate import Calibration, OpsCalibration

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
        typer.Option(
            help="search: try every switch end to end (L + 1 passes); probe: per-block probe only; per-block: choose "
            "each block's operation (prune, mean or mlerp) end to end, starting from the best switch."
        ),
    ] = CalibrationMethod.SEARCH,
    passes: Annotated[int, typer.Option(help="per-block: most coordinate-descent passes over the blocks.", min=0)] = 2,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write the choice as JSON for `tofu-edge export --config FILE`.", show_default=False
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Choose the ToFu switch block (prune below it, MLERP from it), or each block's step operation, on real images.

    The schedule comes from --r, --keep or --config (default --r 13); the operations are what it chooses. Prints the
    `tofu-edge export` command that uses the choice; --output writes it as a file that `--config` takes.

    Example: tofu-edge calibrate deit_small_patch16_224 photos/ --r 13 --method per-block -o calib.json
    """
    from tofu_edge.calibrate import calibrate_ops, calibrate_switch
    from tofu_edge.checkpoint import load_checkpoint
    from tofu_edge.files import atomic_outputs, check_writable
    from tofu_edge.images import bundled_photo_folder, photo_images
    from tofu_edge.models import create_model

    config = fusion.config()  # --clamp, --align, ... apply to the default r too
    fusion.refuse(("mode", "switch", "ops"), "calibrate chooses the step operations; leave them out")
    schedule = (
        config if fusion.schedule_given else dataclasses.replace(config, r=DEFAULT_CALIBRATION_R)
    ).token_schedule()
    if output is not None:
        check_writable(output)  # before the calibration, not after it
    network = create_model(model, img_size=img_size)
    if checkpoint is not None:
        load_checkpoint(network, checkpoint)
    folder = images or bundled_photo_folder()
    if folder is None:
        raise TofuError("give a folder of calibration photos (or install foolbox for its ImageNet samples)")
    pattern = "imagenet_*" if images is None else "*"
    pictures = photo_images(network, folder, limit=limit, pattern=pattern)
    console = Console(stderr=True)
    columns = (TextColumn(f"calibrating ({method.value})"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("passes", total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if method is CalibrationMethod.PER_BLOCK:
            result = calibrate_ops(network, pictures, schedule, passes=passes, progress=report)
            chosen = result.config
        else:
            result = calibrate_switch(network, pictures, schedule, method, progress=report)
            chosen = dataclasses.replace(schedule, mode=Mode.TOFU, switch=result.switch)
    payload = {
        "model": model,
        "img_size": img_size,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "config": chosen.to_dict(),
        "calibration": result.to_dict(),
    }
    if output is not None:
        with atomic_outputs(output) as (temp,):
            temp.write_text(json.dumps(payload, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    if method is CalibrationMethod.PER_BLOCK:
        _render_ops(result, model, Console())
    else:
        _render_switch(result, model, Console())
    prefix = f"tofu-edge export {model}{_model_flags(img_size, checkpoint)}"
    typer.echo(f"export with: {prefix} {export_flags(chosen)}")
    if output is not None:
        typer.echo(f"or: {prefix} --config {output}")


def _model_flags(img_size: int | None, checkpoint: Path | None) -> str:
    return (f" --img-size {img_size}" if img_size else "") + (f" --checkpoint {checkpoint}" if checkpoint else "")


def _render_switch(result: Calibration, model: str, console: Console) -> None:
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
    console.print(f"switch = {result.switch} ({result.method})")


def _render_ops(result: OpsCalibration, model: str, console: Console) -> None:
    starts = ", ".join(f"{name}: {score:.5f}" for name, score in result.start_scores.items())
    console.print(f"output cosine to the unfused model, uniform schedules: {starts}")
    table = Table(title=f"{model}: step operation per block ({result.images} images)", title_justify="left")
    for column in ("block", "start", "chosen"):
        table.add_column(column, justify="right")
    for index, (start, op) in enumerate(zip(result.start_ops, result.ops, strict=True)):
        table.add_row(str(index), start.value, op.value)
    console.print(table)
    console.print(
        f"output cosine {result.score:.5f} (start, {result.start}: {result.start_score:.5f}; "
        f"{len(result.changes)} changes, {result.sweeps} passes, {result.evaluations} evaluations)"
    )
