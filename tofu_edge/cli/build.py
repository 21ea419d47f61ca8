"""`tofu-edge build`: a TensorRT engine (plain plan file) and its JSON sidecar from an ONNX file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tofu_edge.engine import BuildReport, build_engine

__all__ = ["build_command", "render_build", "PluginsOption"]

PluginsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--plugins",
        help="TensorRT plugin library to load (repeatable), e.g. build/kernels/libtofu_edge_plugins.so.",
        envvar="TOFU_EDGE_PLUGINS",
        show_default=False,
    ),
]


def build_command(
    onnx: Annotated[Path, typer.Argument(help="The ONNX file (portable, or plugin flavour with --plugins).")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The engine file to write (sidecar: same name + .json).")
    ],
    fp16: Annotated[
        bool, typer.Option("--fp16", help="Allow fp16 kernels (an error on a GPU without fast fp16).")
    ] = False,
    tf32: Annotated[
        bool, typer.Option(help="Allow TF32 for fp32 layers (TensorRT's default); --no-tf32 for strict fp32.")
    ] = True,
    plugins: PluginsOption = None,
    serialize_plugins: Annotated[
        bool, typer.Option("--serialize-plugins", help="Embed the plugin libraries in the engine.")
    ] = False,
    min_batch: Annotated[
        int | None, typer.Option(help="Dynamic batch: smallest batch (default 1).", show_default=False)
    ] = None,
    opt_batch: Annotated[
        int | None, typer.Option(help="Dynamic batch: batch to tune for (default --max-batch).", show_default=False)
    ] = None,
    max_batch: Annotated[
        int | None,
        typer.Option(help="Dynamic batch: largest batch (default the largest given, else 1).", show_default=False),
    ] = None,
    workspace: Annotated[
        int | None, typer.Option(help="Workspace memory limit in MiB (default: TensorRT's).", show_default=False)
    ] = None,
    timing_cache: Annotated[
        Path | None, typer.Option(help="Timing cache file: read if present, then updated.", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the sidecar as JSON.")] = False,
) -> None:
    """Build a TensorRT engine from an ONNX file; the plan loads in trtexec --loadEngine as it is.

    Needs TensorRT 10 and an NVIDIA GPU; every input is checked first, so bad arguments fail fast anywhere.

    Example: tofu-edge build out/deit_s_r13.onnx --output out/deit_s_r13.engine --fp16 --max-batch 8
    """
    report = build_engine(
        onnx,
        output,
        fp16=fp16,
        tf32=tf32,
        plugins=plugins or None,
        serialize_plugins=serialize_plugins,
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        workspace_mib=workspace,
        timing_cache=timing_cache,
    )
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else render_build(report))


def render_build(report: BuildReport) -> str:
    """A few lines: files written and times, precision and batch, the engine's inputs and outputs, plugins."""
    seconds = report.seconds
    profile = report.profile
    lines = [
        f"wrote {report.engine_path} ({report.engine_bytes / (1 << 20):.1f} MiB) and {report.sidecar_path} "
        f"in {seconds['total']:.1f} s (parse {seconds['parse']:.1f} s, build {seconds['build']:.1f} s)",
        f"TensorRT {report.tensorrt_version}, {report.precision}{' (TF32 allowed)' if report.tf32 else ''}, "
        + (f"batch profile min {profile.min} / opt {profile.opt} / max {profile.max}" if profile else "static batch"),
    ]
    lines += [f"input  {s.name} {list(s.shape)} {s.dtype}" for s in report.inputs]
    lines += [f"output {s.name} {list(s.shape)} {s.dtype}" for s in report.outputs]
    if report.plugins:
        where = "serialized into the engine" if report.plugins_serialized else "load them again to run it"
        lines.append(f"plugins: {', '.join(str(p) for p in report.plugins)} ({where})")
    return "\n".join(lines)
