"""`tofu-edge bench`: latency and throughput of fused and unfused variants, timed side by side in one run."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tofu_edge.choices import Backend, Device, OrtProvider, StepBackend
from tofu_edge.cli.build import PluginsOption
from tofu_edge.cli.options import (
    NO_FUSION_OPTIONS,
    CheckpointOption,
    FusionOptions,
    ImgSizeOption,
    StepOption,
    with_fusion_options,
)
from tofu_edge.errors import ConfigError
from tofu_edge.files import atomic_outputs, check_writable
from tofu_edge.measure.allocator import allocator_hint
from tofu_edge.measure.bench import ENGINE_SUFFIXES, BenchResult, Timing, bench_files
from tofu_edge.measure.plot import plot_sweep
from tofu_edge.measure.variants import Variant, parse_sweep, variant_name

__all__ = ["bench_command", "render_bench"]

MODEL_FILE_SUFFIXES = (".onnx", *ENGINE_SUFFIXES)
PIPE_WIDTH = 160  # columns of the table when stdout is not a terminal (rich would squeeze it into 80)


@with_fusion_options
def bench_command(
    model: Annotated[
        str,
        typer.Argument(
            help="timm model name (unfused and fused variants are built), or an .onnx / .engine file timed as is.",
            show_default=False,
        ),
    ],
    backend: Annotated[
        Backend | None,
        typer.Option(help="For a model name: eager torch, onnxruntime (exported) or tensorrt (built). Default torch."),
    ] = None,
    fusion: FusionOptions = NO_FUSION_OPTIONS,
    img_size: ImgSizeOption = None,
    sweep: Annotated[
        str | None,
        typer.Option(
            help="Variants to time instead of --r/--keep: r=0,8,13,16 or keep=0.8,0.6; writes a plot.",
            show_default=False,
        ),
    ] = None,
    batch: Annotated[
        int, typer.Option(help="Images per call (the file's own batch for a static .onnx/engine).", min=1)
    ] = 1,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads (torch and onnxruntime intra-op).", min=1, show_default=False)
    ] = None,
    warmup: Annotated[int, typer.Option(help="Untimed rounds before timing.", min=0)] = 10,
    iterations: Annotated[int, typer.Option(help="Timed rounds (one call of every variant each).", min=1)] = 50,
    seconds: Annotated[
        float | None, typer.Option(help="Time budget instead of --iterations.", min=0.001, show_default=False)
    ] = None,
    checkpoint: CheckpointOption = None,
    device: Annotated[Device, typer.Option(help="torch device; for onnxruntime the default provider.")] = Device.CPU,
    ort_provider: Annotated[
        OrtProvider | None,
        typer.Option(help="onnxruntime execution provider (default: from --device).", show_default=False),
    ] = None,
    ort_spinning: Annotated[
        bool,
        typer.Option(
            help="Let onnxruntime's idle threads spin (off: interleaved sessions would slow each other; a one-model "
            "deployment may want it on, see the README's Benchmarks)."
        ),
    ] = False,
    fp16: Annotated[bool, typer.Option(help="TensorRT: allow fp16 kernels when building engines.")] = False,
    compile: Annotated[
        bool, typer.Option("--compile", help="torch backend: time torch.compile'd fused and unfused models.")
    ] = False,
    step: StepOption = StepBackend.AUTO,
    baseline: Annotated[
        Path | None, typer.Option(help="With a file MODEL: a baseline file timed beside it.", show_default=False)
    ] = None,
    plugins: PluginsOption = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="JSON lines to write (header, then one line per variant).", show_default=False
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="PNG of speed-up and latency vs GMACs (default with --sweep: beside --output, or "
            "<model>_<backend>_sweep.png).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON lines instead of the table.")] = False,
) -> None:
    """Time a model's fused and unfused variants side by side, interleaved: median, p90, p99, min, images/s.

    The variants run round-robin (one call each per round) after a warm-up; speed-ups are medians of per-round
    ratios against the first variant (the unfused model, or --baseline). Progress goes to stderr.

    Example: tofu-edge bench deit_small_patch16_224 --backend onnxruntime --sweep r=0,8,13,16 --clamp -o out/b.jsonl
    """
    timing = Timing(warmup, None if seconds else iterations, seconds, threads, ort_spinning)
    is_file = model.endswith(MODEL_FILE_SUFFIXES) or Path(model).is_file()
    variants = _variants(model, is_file, sweep, fusion)
    if not is_file and baseline is not None:
        raise ConfigError("--baseline takes a file, for a file MODEL; a model name is timed against its unfused self")
    if sweep is not None and plot is None:
        plot = output.with_suffix(".png") if output else Path(f"{model}_{(backend or Backend.TORCH).value}_sweep.png")
    file_backend = "onnxruntime" if model.endswith(".onnx") else "tensorrt"
    if is_file and backend is not None and backend.value != file_backend:
        raise ConfigError(f"{model} runs in {file_backend}, not {backend.value}")
    for path in (output, plot):
        if path is not None:
            check_writable(path)

    with _progress_bar() as report:
        if is_file:
            result = bench_files(
                model,
                baseline=baseline,
                device=device,
                batch=batch,
                timing=timing,
                ort_provider=ort_provider,
                plugins=plugins or (),
                progress=report,
            )
        else:
            from tofu_edge.measure.bench import bench_model

            result = bench_model(
                model,
                variants,
                backend=backend or Backend.TORCH,
                device=device,
                ort_provider=ort_provider,
                batch=batch,
                img_size=img_size,
                checkpoint=checkpoint,
                fp16=fp16,
                compile=compile,
                step=step,
                timing=timing,
                progress=report,
            )

    text = result.to_jsonl()
    if output is not None:
        with atomic_outputs(output) as (temp,):
            temp.write_text(text)
    if plot is not None:
        plot_sweep(result.rows, plot, title=_title(result))
    if as_json:
        typer.echo(text, nl=False)
    else:
        render_bench(result, Console(width=None if sys.stdout.isatty() else PIPE_WIDTH))
    for path in (output, plot):
        if path is not None:
            typer.echo(f"wrote {path}", err=True)
    if device is Device.CPU and (hint := allocator_hint()) is not None:
        typer.echo(hint, err=True)


def render_bench(result: BenchResult, console: Console) -> None:
    """One environment line, the results table and the tegrastats power line when there is one."""
    header = result.header
    versions = ", ".join(f"{k} {v}" for k, v in header["versions"].items())
    gpu = header.get("gpu", {}).get("name")
    console.print(
        f"{header['cpu']} ({header['cores']} cores, threads {header['threads'] or header['torch_threads']})"
        + (f", {gpu}" if gpu else "")
        + f"; {versions}"
    )
    table = Table(title=_title(result), title_justify="left")
    for column in ("variant", "r", "GMACs", "median ms", "p90 ms", "p99 ms", "min ms", "images/s", "speed-up", "ideal"):
        table.add_column(column, justify="left" if column in ("variant", "r") else "right")
    for row in result.rows:
        stats = row["stats"]
        table.add_row(
            row["variant"],
            _schedule(row.get("r_schedule")),
            "-" if row.get("gmacs") is None else f"{row['gmacs']:.4g}",
            f"{stats['median_ms']:.3f}",
            f"{stats['p90_ms']:.3f}",
            f"{stats['p99_ms']:.3f}",
            f"{stats['min_ms']:.3f}",
            f"{stats['images_per_s']:.1f}",
            "-" if row.get("speedup") is None else f"{row['speedup']:.2f}x",
            "-" if row.get("ideal_speedup") is None else f"{row['ideal_speedup']:.2f}x",
        )
    console.print(table)
    for rail, power in (header.get("power") or {}).items():
        console.print(f"power {rail}: mean {power['mean_mw']:.0f} mW, max {power['max_mw']:.0f} mW (tegrastats)")


def _title(result: BenchResult) -> str:
    h = result.header
    backend = h["backend"] + (f" ({h['ort_provider']})" if h.get("ort_provider") else "")
    samples = result.rows[0]["stats"]["samples"]
    return (
        f"{Path(h['model']).name}, {backend} on {h['device']}, batch {h['batch']}, {h['precision']}, {samples} rounds"
    )


def _schedule(rs: list[int] | None) -> str:
    """``[8, 8, 8, 8]`` -> ``8``; a varying schedule as a short list."""
    if not rs:
        return "-"
    if len(set(rs)) == 1:
        return str(rs[0])
    return ",".join(map(str, rs))


def _variants(model: str, is_file: bool, sweep: str | None, fusion: FusionOptions) -> list[Variant]:
    """The variants a model name is timed as (none for a model file, timed as it is), after refusing the options
    that cannot apply.

    Raises:
        ConfigError: --sweep with --r/--keep, a schedule or fusion options for a model file, fusion options with
            no schedule to apply them to, or a malformed option.
    """
    if sweep is not None and fusion.schedule_given:
        raise ConfigError("give --sweep or --r/--keep, not both")
    if is_file and (sweep is not None or fusion.schedule_given):
        raise ConfigError(f"{model} is a model file: it is timed as it is, without --r, --keep or --sweep")
    if is_file:
        fusion.refuse(fusion.given, f"{model} is a model file: it is timed as it is, without fusion options")
        return []
    if sweep is None and not fusion.schedule_given:
        message = "without --r, --keep or --sweep only the unfused model is timed: give one, or leave out"
        fusion.refuse(fusion.given, message)
    base = fusion.config()
    variants = parse_sweep(sweep, base) if sweep else [Variant(variant_name(None))]
    if sweep is None and fusion.schedule_given:
        variants.append(Variant(variant_name(base), base))
    return variants


@contextlib.contextmanager
def _progress_bar() -> Iterator[Callable[[str, float], None]]:
    """A rich progress bar on a terminal's stderr (gone when done), one task per phase; yields its callback."""
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # a log file or a pipe gets no bar (nor the blank line it leaves)
    )
    tasks: dict[str, TaskID] = {}

    def update(phase: str, done: float) -> None:
        if phase not in tasks:
            tasks[phase] = progress.add_task(phase, total=1.0)
        progress.update(tasks[phase], completed=done)

    with progress:
        yield update
