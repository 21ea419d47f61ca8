"""`tofu-edge tune`: the fastest schedule that keeps a fidelity, or the most faithful at a speed, on this device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tofu_edge.choices import Backend, Device
from tofu_edge.cli.interrupts import Terminated, interrupted_exit_code
from tofu_edge.cli.options import CheckpointOption, ImgSizeOption, ModelArg, export_flags
from tofu_edge.errors import TofuError

if TYPE_CHECKING:
    from tofu_edge.tune import TuneReport

__all__ = ["tune_command", "render_tune"]

PIPE_WIDTH = 160  # columns of the table when stdout is not a terminal


def tune_command(
    model: ModelArg,
    images: Annotated[
        Path | None,
        typer.Argument(
            help="Photos to measure fidelity on: a flat folder, or class subfolders for top-1 against labels "
            "(default: foolbox's ImageNet samples, if installed).",
            show_default=False,
        ),
    ] = None,
    speedup: Annotated[
        float | None,
        typer.Option(help="Target: the most faithful schedule at least this many times faster.", show_default=False),
    ] = None,
    latency_ms: Annotated[
        float | None,
        typer.Option("--latency-ms", help="Target: the most faithful schedule under this latency.", show_default=False),
    ] = None,
    min_cosine: Annotated[
        float | None,
        typer.Option(help="Target: the fastest schedule whose outputs keep this mean cosine.", show_default=False),
    ] = None,
    max_top1_drop: Annotated[
        float | None,
        typer.Option(
            "--max-top1-drop",
            help="Target: the fastest schedule losing at most this many top-1 points (against labels, else the "
            "disagreement with the unfused model, which bounds it).",
            show_default=False,
        ),
    ] = None,
    backend: Annotated[Backend, typer.Option(help="Where to time: onnxruntime, torch or tensorrt.")] = (
        Backend.ONNXRUNTIME
    ),
    device: Annotated[Device, typer.Option(help="torch device; for onnxruntime the provider.")] = Device.CPU,
    compile: Annotated[bool, typer.Option("--compile", help="torch backend: time torch.compile'd models.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="onnxruntime: INT8 Linear layers as one more axis.")] = False,
    batch: Annotated[int, typer.Option(help="Images per call of the timed model.", min=1)] = 1,
    img_size: ImgSizeOption = None,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads (torch and onnxruntime intra-op).", min=1, show_default=False)
    ] = None,
    checkpoint: CheckpointOption = None,
    limit: Annotated[int, typer.Option(help="Photos to measure fidelity on (spread over the folder).", min=1)] = 32,
    budget_min: Annotated[float, typer.Option("--budget-min", help="Wall-clock budget of the search, minutes.")] = 10.0,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the chosen config for `export --config FILE`.", show_default=False),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            help="The Pareto front and every point as JSON; a PNG and the measurement cache go beside it "
            "(default: tune_<model>.json).",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Reuse the measurements of an interrupted run (same settings).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Find the schedule that best meets one target, measured on this device and backend.

    Token schedules (uniform r, decreasing, keep targets, aligned) and step operations are scored on the photos;
    a cost model fitted to the first timings ranks the rest, and only schedules near the target are timed,
    interleaved with the unfused model. Prints the Pareto front and the `export` command; exits 1 when no schedule
    meets the target (showing the closest), 130 / 143 when interrupted (the measurements are kept: --resume).

    Example: tofu-edge tune deit_small_patch16_224 photos/ --speedup 1.5 --budget-min 10 -o tuned.json
    """
    from tofu_edge.files import atomic_outputs, check_writable
    from tofu_edge.tune import Target, TuneSettings, tune

    target = Target.from_options(
        speedup=speedup, latency_ms=latency_ms, min_cosine=min_cosine, max_top1_drop=max_top1_drop
    )
    settings = TuneSettings(backend, device, batch, threads, compile, int8, budget_s=60.0 * budget_min)
    report = report or Path(f"tune_{model.replace('/', '_')}.json")
    if report.suffix.lower() != ".json":
        raise TofuError(f"--report writes JSON; give a .json name, got {report}")
    plot, cache = report.with_suffix(".png"), report.with_suffix(".cache.json")
    for path in (output, report, plot, cache):
        if path is not None:
            check_writable(path)  # before the search, not after it

    console = Console(stderr=True)
    columns = (TextColumn("tuning: {task.description:<10}"), BarColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task("start", total=1.0)
            result = tune(
                model,
                images,
                target,
                settings,
                img_size=img_size,
                checkpoint=checkpoint,
                limit=limit,
                cache_path=cache,
                resume=resume,
                progress=lambda phase, done: bar.update(task, description=phase, completed=done),
            )
    except (KeyboardInterrupt, Terminated) as error:  # Ctrl-C, SIGTERM, a dropped ssh session
        kept = f"the measurements so far are in {cache}" if cache.is_file() else "nothing was measured yet"
        typer.echo(f"interrupted: {kept}; run the same command with --resume to go on", err=True)
        raise typer.Exit(interrupted_exit_code(error)) from None

    with atomic_outputs(report) as (temp,):
        temp.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    result.plot(plot)
    if output is not None and result.met:  # a config that misses the target is not one to export
        with atomic_outputs(output) as (temp,):
            temp.write_text(json.dumps(result.config_payload(), indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        render_tune(result, Console(width=None if Console().is_terminal else PIPE_WIDTH), report, plot, output)
    if not result.met:
        closest = (
            "nothing could be timed" if result.chosen is None else f"the closest is {result.chosen.candidate.name}"
        )
        typer.echo(f"error: no schedule meets {target.describe()} here; {closest} (see above)", err=True)
        raise typer.Exit(1)


def render_tune(result: TuneReport, console: Console, report: Path, plot: Path, output: Path | None) -> None:
    """The Pareto front as a table, the choice with both timings, notes, and the export command."""
    labelled = "labelled" if result.labelled else "unlabelled"
    console.print(
        f"{result.model}: {result.settings['backend']} on {result.environment.get('device', 'cpu')}, batch "
        f"{result.settings['batch']}, {result.images} {labelled} photos; target {result.target.describe()}"
    )
    table = Table(title="Pareto front (speed-up against cosine)", title_justify="left")
    for column in ("schedule", "speed-up", "", "ms", "cosine", "top-1 drop", "MACs %"):
        table.add_column(column, justify="left" if column in ("schedule", "") else "right", no_wrap=True)
    for point in result.front:
        fidelity, latency = point.fidelity, point.latency_ms(result.unfused_ms)
        mark = " *" if point is result.chosen else ""
        table.add_row(
            point.candidate.name + mark,
            f"{point.speedup:.2f}x",
            "timed" if point.measured else "predicted",
            "" if latency is None else f"{latency:.2f}",
            f"{fidelity.cosine:.5f}" + (" ~" if point.fidelity_estimated else ""),
            "-" if fidelity.top1_drop is None else f"{fidelity.top1_drop:.1f}",
            f"{100 * point.candidate.macs_ratio:.0f}",
        )
    console.print(table)
    timed = sum(p.measured for p in result.points)
    console.print(f"{len(result.points)} schedules scored, {timed} timed, in {result.seconds:.0f} s")
    for note in result.notes:
        console.print(f"note: {note}")
    chosen = result.chosen
    if chosen is None:
        return
    again = "" if result.remeasured is None else f", re-measured {result.remeasured.speedup:.2f}x"
    verdict = "chosen" if result.met else "closest (does not meet the target)"
    console.print(
        f"{verdict}: {chosen.candidate.name} (*): {chosen.speedup:.2f}x{again}, cosine {chosen.fidelity.cosine:.5f}"
    )
    wrote_config = output is not None and result.met
    console.print(f"wrote {report} and {plot}" + (f", and the config to {output}" if wrote_config else ""))
    if result.met:
        model_flags = (f" --img-size {result.img_size}" if result.img_size else "") + (
            f" --checkpoint {result.checkpoint}" if result.checkpoint else ""
        )
        fusion = f"--config {output}" if output else _flags(result)
        int8 = " --int8" if chosen.candidate.int8 else ""
        console.print(f"export with: tofu-edge export {result.model} -o out.onnx{model_flags} {fusion}{int8}".rstrip())


def _flags(result: TuneReport) -> str:
    return "" if result.config is None else export_flags(result.config)
