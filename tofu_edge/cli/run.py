"""`tofu-edge run`: classify one image with a TensorRT engine (GPU latency) or an ONNX file (onnxruntime, CPU)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tofu_edge.cli.build import PluginsOption
from tofu_edge.engine.classify import Classification, classify_image

__all__ = ["run_command", "render_classification"]


def run_command(
    engine: Annotated[
        Path, typer.Argument(help="The engine file (from tofu-edge build or trtexec), or an .onnx file (onnxruntime).")
    ],
    image: Annotated[Path, typer.Argument(help="An image (JPEG, PNG, ...) or a preprocessed .npy tensor.")],
    plugins: PluginsOption = None,
    top: Annotated[int, typer.Option("--top", help="How many classes to show.", min=1)] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed runs before timing.", min=0)] = 10,
    iterations: Annotated[int, typer.Option(help="Timed runs (CUDA events around execute_async_v3).", min=1)] = 50,
    allow_host_code: Annotated[
        bool,
        typer.Option(help="Allow host code embedded in the engine (plugins serialized into it; trusted files only)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Classify an image with a TensorRT engine or an ONNX file: top-k classes, probabilities and latency.

    Preprocessing follows the engine's sidecar or the ONNX file's metadata (timm-style resize, centre crop,
    mean/std; ImageNet without one). An .onnx file runs in onnxruntime on the CPU; a plugin-flavour one uses the
    native ops library (libtofu_edge_ort.so) where it is built.

    Example: tofu-edge run out/deit_s_r13.engine cat.jpg --top 5
    """
    result = classify_image(
        engine,
        image,
        plugins=plugins or None,
        top=top,
        warmup=warmup,
        iterations=iterations,
        allow_host_code=allow_host_code,
    )
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else render_classification(result))


def render_classification(result: Classification) -> str:
    """The top-k table and one latency line."""
    stats = result.latency
    lines = [f"{result.image_path.name} through {result.engine_path.name} {list(result.input_shape)}:"]
    lines += ["rank  class  probability"]
    lines += [f"{rank:>4}  {index:>5}  {probability:.4f}" for rank, (index, probability) in enumerate(result.top, 1)]
    how = (
        "onnxruntime session.run on the CPU, wall clock"
        if result.runtime == "onnxruntime"
        else "execute_async_v3, CUDA events"
    )
    first = "first run" if result.runtime == "onnxruntime" else "first run with copies"
    lines.append(
        f"latency: median {stats.median_ms:.3f} ms, p90 {stats.p90_ms:.3f} ms, p99 {stats.p99_ms:.3f} ms over "
        f"{stats.samples} runs ({how}); {first} {result.first_run_ms:.3f} ms"
    )
    return "\n".join(lines)
