"""The runner of one variant in each backend: a model name's variant fused (and exported, and built) or a model
file opened as it is, after checking that the backend is installed. `tofu_edge.measure.bench` times them."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tofu_edge.choices import Backend, Device, OrtProvider, StepBackend
from tofu_edge.engine.feeds import example_feeds
from tofu_edge.engine.sidecar import onnx_precision
from tofu_edge.errors import ConfigError
from tofu_edge.export import MetadataKey, available_provider, ort_session
from tofu_edge.measure.latency import Runner, engine_runner, ort_runner, torch_runner

if TYPE_CHECKING:
    import torch

    from tofu_edge.measure.bench import Timing
    from tofu_edge.measure.variants import Variant

__all__ = ["check_backend", "RunnerSetup", "model_runner", "file_runner", "SEED"]

SEED = 0


@dataclass(frozen=True)
class RunnerSetup:
    """How every variant of one run is prepared, and what the run shares.

    Attributes:
        backend: Eager PyTorch, onnxruntime (exported first) or TensorRT (exported and built first).
        device: The PyTorch device of the torch backend.
        provider: The onnxruntime provider (`check_backend`'s), ``None`` for the other backends.
        folder: Where exported files and engines go.
        timing: Threads and spinning of the onnxruntime sessions.
        stack: Closes the TensorRT engines when the run ends.
        fp16: Build TensorRT engines with fp16 kernels allowed.
        compile: ``torch.compile`` the torch backend's models.
        step: The fusion steps' backend in PyTorch (`tofu_edge.patch.steps`).
    """

    backend: Backend
    device: Device
    provider: OrtProvider | None
    folder: Path
    timing: Timing
    stack: contextlib.ExitStack
    fp16: bool = False
    compile: bool = False
    step: StepBackend | str = StepBackend.AUTO


def check_backend(
    backend: Backend, device: Device, ort_provider: OrtProvider | str | None, fp16: bool, batch: int
) -> OrtProvider | None:
    """Validate the options and that the backend is installed, before any slow work; the onnxruntime provider."""
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    if fp16 and backend is not Backend.TENSORRT:
        raise ConfigError("--fp16 applies to TensorRT engines; torch and onnxruntime run fp32 here")
    if backend is Backend.TORCH and device is Device.CUDA:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: torch sees no CUDA device (or this torch build has no CUDA)")
    if backend is Backend.TENSORRT:
        from tofu_edge.engine.backend import import_cudart, import_tensorrt

        import_tensorrt()
        import_cudart()
        return None
    if backend is Backend.ONNXRUNTIME:
        default = OrtProvider.CUDA if device is Device.CUDA else OrtProvider.CPU
        return available_provider(ort_provider or default)
    return None


def model_runner(variant: Variant, base: torch.nn.Module, images: torch.Tensor, setup: RunnerSetup) -> Runner:
    """The variant's runner: the (fused copy of the) model in PyTorch, or exported (and built) first.

    Shapes:
        images: [B, C, H, W], the batch every call runs
    """
    if setup.backend is Backend.TORCH:
        import torch

        from tofu_edge.patch import fuse, use_step

        module = base if variant.config is None else use_step(fuse(copy.deepcopy(base), variant.config), setup.step)
        module = module.to(setup.device.value)
        if setup.compile:
            module = torch.compile(module)
        return torch_runner(variant.name, module, images.to(setup.device.value))
    from tofu_edge.export import export_onnx

    stem = "".join(c if c.isalnum() else "_" for c in variant.name)
    onnx_path = setup.folder / f"{stem}.onnx"
    export_onnx(base, onnx_path, variant.config, batch=images.shape[0])  # fuses a copy; parity checked
    if setup.backend is Backend.ONNXRUNTIME:
        timing = setup.timing
        session = ort_session(onnx_path, provider=setup.provider, threads=timing.threads, spinning=timing.ort_spinning)
        return ort_runner(variant.name, session, images.numpy())
    from tofu_edge.engine import EngineRunner, build_engine

    engine_path = setup.folder / f"{stem}.engine"
    build_engine(onnx_path, engine_path, fp16=setup.fp16)
    engine = setup.stack.enter_context(EngineRunner(engine_path))
    return engine_runner(variant.name, engine, images.numpy())


def file_runner(
    name: str,
    path: Path,
    backend: Backend,
    provider: OrtProvider | None,
    batch: int,
    timing: Timing,
    plugins: Sequence[str | Path],
    stack: contextlib.ExitStack,
) -> tuple[Runner, dict]:
    """The runner of an ``.onnx`` file (onnxruntime) or an engine as it is, fed every input it declares
    (`example_feeds`), and what its metadata says: ``plan``, ``batch`` and ``precision``.

    Raises:
        ConfigError: an input that cannot be fed (a dynamic axis other than the batch, an unknown dtype).
    """
    if backend is Backend.ONNXRUNTIME:
        from tofu_edge.engine.sidecar import inspect_onnx

        info = inspect_onnx(path)
        feeds = example_feeds(info.inputs, info.metadata, batch, SEED, path.name)
        session = ort_session(path, provider=provider, threads=timing.threads, spinning=timing.ort_spinning)
        runner = ort_runner(name, session, feeds)
        plan, precision = info.metadata.get(MetadataKey.PLAN), onnx_precision(info.metadata)
        meta = {"plan": plan, "batch": runner.batch, "precision": precision}
        return runner, meta
    from tofu_edge.engine import EngineRunner

    engine = stack.enter_context(EngineRunner(path, plugins=list(plugins) or None))
    sidecar = engine.sidecar or {}
    metadata = sidecar.get("onnx", {}).get("metadata", {})
    runner = engine_runner(name, engine, example_feeds(engine.inputs, metadata, batch, SEED, path.name))
    meta = {"plan": metadata.get(MetadataKey.PLAN), "batch": runner.batch, "precision": onnx_precision(metadata)}
    if "precision" in sidecar:
        meta["precision"] = sidecar["precision"]
    return runner, meta
