#!/usr/bin/env python3
"""Run a tofu-edge TensorRT engine on one image, standalone: TensorRT, cuda-python, numpy and Pillow only.

No torch, timm or tofu_edge needed, so it runs on a Jetson with JetPack's TensorRT as it is.

    python3 run_engine.py run deit_s_r13.engine cat.jpg --plugins libtofu_edge_plugins.so --top 5
    python3 run_engine.py prepare cat.jpg cat.ppm --engine deit_s_r13.engine    # for the C++ app
    python3 run_engine.py prepare cat.jpg cat.bin --size 224                     # raw float32 [1, 3, 224, 224]

Preprocessing (the same as ``tofu_edge.engine.preprocess``, which follows timm's evaluation transform): resize the
shorter side to ``floor(size / crop_pct)``, centre crop, scale to [0, 1], normalize with mean/std. Values come from
the engine's sidecar (``<engine>.json``) when it is there, else ImageNet's.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import sys
from pathlib import Path

import numpy as np

__all__ = ["Preprocess", "preprocess", "prepare", "run", "main"]

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "crop_pct": 0.875, "interpolation": "bicubic"}
RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


class AppError(Exception):
    """A known failure: printed as one line, exit code 2."""


class Preprocess:
    """Mean, std, crop fraction and interpolation, from a sidecar's ``preprocess`` entry or ImageNet's."""

    def __init__(self, entry: dict | None = None) -> None:
        values = {**IMAGENET, **(entry or {})}
        self.mean = np.asarray(values["mean"], dtype=np.float32)
        self.std = np.asarray(values["std"], dtype=np.float32)
        self.crop_pct = float(values["crop_pct"])
        self.interpolation = str(values["interpolation"])

    @classmethod
    def for_engine(cls, engine: Path | None) -> Preprocess:
        sidecar = engine.with_name(engine.name + ".json") if engine else None
        if sidecar is None or not sidecar.is_file():
            return cls()
        return cls(json.loads(sidecar.read_text()).get("preprocess"))


def preprocess(image, height: int, width: int, config: Preprocess):
    """Resize and centre-crop a PIL image the way timm evaluates; returns (cropped PIL image, [1, 3, H, W] float32)."""
    image = image.convert("RGB")
    scale_h, scale_w = math.floor(height / config.crop_pct), math.floor(width / config.crop_pct)
    old_w, old_h = image.size
    if scale_h == scale_w:
        short, long = min(old_w, old_h), max(old_w, old_h)
        new_long = int(scale_h * long / short)
        size = (scale_h, new_long) if old_w <= old_h else (new_long, scale_h)
    else:
        ratio = min(old_h / scale_h, old_w / scale_w)
        size = (round(old_w / ratio), round(old_h / ratio))
    if size != image.size:
        image = image.resize(size, RESAMPLE[config.interpolation])
    left, top = int(round((image.size[0] - width) / 2.0)), int(round((image.size[1] - height) / 2.0))
    image = image.crop((left, top, left + width, top + height))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return image, np.ascontiguousarray(((pixels - config.mean) / config.std).transpose(2, 0, 1)[None])


def prepare(image_path: Path, output: Path, height: int, width: int, config: Preprocess) -> None:
    """Write the model input for the C++ app: ``.ppm`` (resized and cropped, normalized by the app), ``.bin``/``.raw``
    (normalized float32, C order) or ``.npy``."""
    cropped, tensor = preprocess(_open_image(image_path), height, width, config)
    suffix = output.suffix.lower()
    if suffix == ".ppm":
        cropped.save(output, format="PPM")
        mean, std = (",".join(f"{v:g}" for v in values) for values in (config.mean, config.std))
        print(f"wrote {output}; run it with: tofu_edge_run ENGINE {output} --mean {mean} --std {std}")
    elif suffix in (".bin", ".raw"):
        tensor.astype("<f4").tofile(output)
    elif suffix == ".npy":
        np.save(output, tensor)
    else:
        raise AppError(f"output {output} must end in .ppm, .bin, .raw or .npy")


def run(
    engine_path: Path,
    image_path: Path,
    plugins: list[Path],
    top: int,
    warmup: int,
    iterations: int,
    allow_host_code: bool,
) -> int:
    """Deserialize, run once with copies, time ``execute_async_v3`` with CUDA events, print top-k and latency."""
    trt, cudart = _import_runtime()
    if not engine_path.is_file():
        raise AppError(f"engine file {engine_path} does not exist")
    logger = trt.Logger(trt.Logger.WARNING)
    registry = trt.get_plugin_registry()
    for plugin in plugins:
        if not plugin.is_file() or registry.load_library(str(plugin.resolve())) is None:
            raise AppError(f"TensorRT could not load plugin library {plugin}")
    runtime = trt.Runtime(logger)
    runtime.engine_host_code_allowed = allow_host_code
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise AppError(f"cannot deserialize {engine_path} (corrupt, another TensorRT version or GPU, or --plugins)")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    if len(inputs) != 1:
        raise AppError(f"expected one input, the engine has {inputs}")
    shape = list(engine.get_tensor_shape(inputs[0]))
    shape[0] = max(shape[0], 1)  # a dynamic batch runs one image
    context.set_input_shape(inputs[0], shape)
    _, tensor = preprocess(_open_image(image_path), shape[2], shape[3], Preprocess.for_engine(engine_path))
    tensor = np.repeat(tensor, shape[0], axis=0)

    def check(result):
        status, *values = result
        if status != cudart.cudaError_t.cudaSuccess:
            raise AppError(f"CUDA error {cudart.cudaGetErrorName(status)[1]}")
        return values[0] if values else None

    host, device = {}, {}
    for name in names:
        dims = tuple(context.get_tensor_shape(name))
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        nbytes = max(1, math.prod(dims) * dtype.itemsize)
        pointer = check(cudart.cudaMallocHost(nbytes))
        host[name] = np.frombuffer((ctypes.c_uint8 * nbytes).from_address(pointer), dtype, math.prod(dims)).reshape(
            dims
        )
        device[name] = check(cudart.cudaMalloc(nbytes))
        context.set_tensor_address(name, device[name])
    np.copyto(host[inputs[0]], tensor.astype(host[inputs[0]].dtype))
    stream = check(cudart.cudaStreamCreate())
    start, stop = check(cudart.cudaEventCreate()), check(cudart.cudaEventCreate())
    h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost

    def timed(work) -> float:
        check(cudart.cudaEventRecord(start, stream))
        work()
        check(cudart.cudaEventRecord(stop, stream))
        check(cudart.cudaEventSynchronize(stop))
        return check(cudart.cudaEventElapsedTime(start, stop))

    def execute() -> None:
        if not context.execute_async_v3(int(stream)):
            raise AppError("execute_async_v3 failed")

    def with_copies() -> None:
        for name in inputs:
            check(cudart.cudaMemcpyAsync(device[name], host[name].ctypes.data, host[name].nbytes, h2d, stream))
        execute()
        for name in outputs:
            check(cudart.cudaMemcpyAsync(host[name].ctypes.data, device[name], host[name].nbytes, d2h, stream))

    first_ms = timed(with_copies)
    logits = host[outputs[0]].reshape(host[outputs[0]].shape[0], -1)[0].astype(np.float64)
    for _ in range(warmup):
        execute()
    samples = np.asarray([timed(execute) for _ in range(iterations)])

    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    print(f"{image_path.name} through {engine_path.name} {shape}:")
    print("rank  class  probability")
    for rank, index in enumerate(np.argsort(-probabilities, kind="stable")[:top], 1):
        print(f"{rank:>4}  {index:>5}  {probabilities[index]:.4f}")
    median, p90, p99 = np.percentile(samples, [50, 90, 99])
    print(
        f"latency: median {median:.3f} ms, p90 {p90:.3f} ms, p99 {p99:.3f} ms over {iterations} runs "
        f"(execute_async_v3, CUDA events); first run with copies {first_ms:.3f} ms"
    )

    for event in (start, stop):
        cudart.cudaEventDestroy(event)
    cudart.cudaStreamDestroy(stream)
    for name in names:
        cudart.cudaFree(device[name])
        cudart.cudaFreeHost(host[name].ctypes.data)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="classify an image with an engine")
    run_parser.add_argument("engine", type=Path)
    run_parser.add_argument("image", type=Path)
    run_parser.add_argument("--plugins", type=Path, action="append", default=[], help="plugin library (repeatable)")
    run_parser.add_argument("--top", type=int, default=5)
    run_parser.add_argument("--warmup", type=int, default=10)
    run_parser.add_argument("--iterations", type=int, default=50)
    run_parser.add_argument("--allow-host-code", action="store_true", help="plugins serialized into the engine")
    prep = commands.add_parser("prepare", help="write a preprocessed input for the C++ app (no TensorRT needed)")
    prep.add_argument("image", type=Path)
    prep.add_argument("output", type=Path, help=".ppm, .bin/.raw (float32) or .npy")
    prep.add_argument("--engine", type=Path, help="take the size from its sidecar and the preprocessing too")
    prep.add_argument("--size", help="H or H,W (default: the engine's input size from its sidecar)")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            if args.top < 1 or args.iterations < 1 or args.warmup < 0:
                raise AppError("need --top >= 1, --iterations >= 1 and --warmup >= 0")
            return run(
                args.engine, args.image, args.plugins, args.top, args.warmup, args.iterations, args.allow_host_code
            )
        height, width = _prepare_size(args.size, args.engine)
        prepare(args.image, args.output, height, width, Preprocess.for_engine(args.engine))
        return 0
    except AppError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _prepare_size(size: str | None, engine: Path | None) -> tuple[int, int]:
    if size:
        try:
            values = [int(v) for v in size.split(",")]
        except ValueError:
            raise AppError(f"--size takes H or H,W, got {size!r}") from None
        if len(values) not in (1, 2) or min(values) < 1:
            raise AppError(f"--size takes H or H,W, got {size!r}")
        return values[0], values[-1]
    sidecar = engine.with_name(engine.name + ".json") if engine else None
    if sidecar is None or not sidecar.is_file():
        raise AppError("give --size, or --engine with its sidecar (<engine>.json)")
    shape = json.loads(sidecar.read_text())["inputs"][0]["shape"]
    return int(shape[-2]), int(shape[-1])


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise AppError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError) as error:
        raise AppError(f"cannot read image {path}: {error}") from None


def _import_runtime():
    try:
        import tensorrt as trt
    except ImportError:
        raise AppError(
            "TensorRT's Python bindings are missing: on a Jetson `sudo apt install python3-libnvinfer` (JetPack 6.1+), "
            "elsewhere `pip install tensorrt --extra-index-url https://pypi.nvidia.com`"
        ) from None
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise AppError("cuda-python is missing: `pip install cuda-python==<your CUDA major.minor>`") from None
    return trt, cudart


if __name__ == "__main__":
    sys.exit(main())
