"""`classify_image`: one image through an engine or an ONNX file, its top-k classes and the latency."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tofu_edge.engine.feeds import is_single_image_model
from tofu_edge.engine.preprocess import PreprocessConfig, load_input, top_k
from tofu_edge.engine.runner import EngineRunner
from tofu_edge.engine.sidecar import TensorSpec, inspect_onnx, preprocess_for
from tofu_edge.errors import ConfigError
from tofu_edge.export.metadata import MetadataKey
from tofu_edge.export.session import ort_session
from tofu_edge.stats import LatencyStats

__all__ = ["Classification", "classify_image"]


@dataclass(frozen=True)
class Classification:
    """What `classify_image` found.

    Attributes:
        engine_path: The engine (or ONNX file) that ran.
        image_path: The image (or ``.npy`` tensor).
        input_shape: The shape the engine ran with.
        top: ``(class index, probability)``, best first (softmax of the first output's first row).
        first_run_ms: Time of the first run (an engine: GPU time with host/device copies, CUDA events).
        latency: Time of a run over the timed iterations (an engine: ``execute_async_v3``, CUDA events; an ONNX
            file: ``session.run`` on the CPU, wall clock).
        preprocess: The preprocessing that was applied.
        tensorrt_version: The TensorRT version that built the engine, from the sidecar (``None`` without one).
        runtime: ``tensorrt`` or ``onnxruntime``.
    """

    engine_path: Path
    image_path: Path
    input_shape: tuple[int, ...]
    top: list[tuple[int, float]]
    first_run_ms: float
    latency: LatencyStats
    preprocess: PreprocessConfig
    tensorrt_version: str | None
    runtime: str = "tensorrt"

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": str(self.engine_path),
            "image": str(self.image_path),
            "input_shape": list(self.input_shape),
            "top": [{"class": index, "probability": probability} for index, probability in self.top],
            "first_run_ms": self.first_run_ms,
            "latency_ms": self.latency.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "tensorrt_version": self.tensorrt_version,
            "runtime": self.runtime,
        }


def classify_image(
    engine_path: str | Path,
    image_path: str | Path,
    *,
    plugins: str | Path | Sequence[str | Path] | None = None,
    top: int = 5,
    warmup: int = 10,
    iterations: int = 50,
    allow_host_code: bool = False,
) -> Classification:
    """Preprocess an image as the engine's sidecar says (ImageNet mean/std without one), run it, rank the classes.

    An engine that needs more than one image (a static batch, or a batch profile's minimum) gets copies of it.
    An ``.onnx`` file runs in onnxruntime on the CPU instead (`_classify_onnx`).

    Raises:
        EngineError: the engine cannot be read or run.
        InputShapeError: a ``.npy`` input does not fit the engine.
        ConfigError: the file is not a classifier of one image batch (a diffusion step, several inputs).
        TofuError: the image cannot be read.
        MissingDependencyError: TensorRT or cuda-python is not installed.
    """
    image_path = Path(image_path)
    if Path(engine_path).suffix.lower() == ".onnx":
        if plugins:
            raise ConfigError(
                "--plugins loads TensorRT plugins into an engine; a plugin-flavour .onnx runs in onnxruntime with "
                "libtofu_edge_ort.so (found in build/onnxruntime or through $TOFU_EDGE_ORT_OPS)"
            )
        return _classify_onnx(Path(engine_path), image_path, top=top, warmup=warmup, iterations=iterations)
    with EngineRunner(engine_path, plugins, allow_host_code=allow_host_code) as runner:
        sidecar = runner.sidecar or {}
        _check_classifier(runner.path, runner.inputs, sidecar.get("onnx", {}).get("metadata", {}))
        config = PreprocessConfig.from_dict(sidecar["preprocess"]) if "preprocess" in sidecar else PreprocessConfig()
        spec = runner.inputs[0]
        tensor = load_input(image_path, spec.shape, config)
        batch = spec.shape[0] if spec.shape[0] > 0 else (runner.profile.min if runner.profile else 1)
        if batch > tensor.shape[0]:  # a static batch, or a profile's smallest batch, above one image
            tensor = np.repeat(tensor[:1], batch, axis=0)
        result = runner.run(tensor)
        latency = runner.benchmark(tensor, warmup=warmup, iterations=iterations)
        logits = next(iter(result.outputs.values()))
        return Classification(
            engine_path=runner.path,
            image_path=image_path,
            input_shape=tuple(tensor.shape),
            top=top_k(logits.reshape(logits.shape[0], -1)[0], top),
            first_run_ms=result.latency_ms,
            latency=latency,
            preprocess=config,
            tensorrt_version=sidecar.get("tensorrt_version"),
        )


def _classify_onnx(onnx_path: Path, image_path: Path, *, top: int, warmup: int, iterations: int) -> Classification:
    """`classify_image` for an ONNX file: preprocessing from its metadata, onnxruntime on the CPU, wall-clock timing
    (``session.run`` returns host arrays, so it is synchronous)."""
    info = inspect_onnx(onnx_path)
    _check_classifier(onnx_path, info.inputs, info.metadata)
    config = preprocess_for(info.metadata)
    session = ort_session(onnx_path)
    spec = session.get_inputs()[0]
    shape = tuple(d if isinstance(d, int) else -1 for d in spec.shape)
    tensor = load_input(image_path, shape, config)
    if shape[0] > tensor.shape[0]:  # a static batch above one image
        tensor = np.repeat(tensor[:1], shape[0], axis=0)
    feeds = {spec.name: tensor}
    started = time.perf_counter()
    logits = session.run(None, feeds)[0]
    first_ms = (time.perf_counter() - started) * 1e3
    for _ in range(warmup):
        session.run(None, feeds)
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        session.run(None, feeds)
        samples.append((time.perf_counter() - started) * 1e3)
    return Classification(
        engine_path=onnx_path,
        image_path=image_path,
        input_shape=tuple(tensor.shape),
        top=top_k(logits.reshape(logits.shape[0], -1)[0], top),
        first_run_ms=first_ms,
        latency=LatencyStats.from_samples(samples, tensor.shape[0]),
        preprocess=config,
        tensorrt_version=None,
        runtime="onnxruntime",
    )


def _check_classifier(path: Path, inputs: Sequence[TensorSpec], metadata: dict[str, Any]) -> None:
    """Refuse a file that does not take one batch of images (a diffusion step takes a latent, a timestep and more).

    Raises:
        ConfigError: naming the file's inputs and what to do instead.
    """
    if is_single_image_model(inputs, metadata):
        return
    names = ", ".join(f"{spec.name} {list(spec.shape)}" for spec in inputs)
    diffusion = MetadataKey.DIFFUSION_PLAN in metadata
    what = "one denoising step of a diffusion model" if diffusion else "not an image classifier"
    raise ConfigError(
        f"{path.name} is {what} (inputs: {names}); run classifies one image input [B, C, H, W]: time the file with "
        f"tofu-edge bench {path}"
    )
