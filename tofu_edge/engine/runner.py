"""`EngineRunner`: run a serialized TensorRT engine with cuda-python, timed with CUDA events."""

from __future__ import annotations

import ctypes
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from tofu_edge.engine.backend import (
    EngineError,
    check_plugin_paths,
    dtype_name,
    import_cudart,
    import_tensorrt,
    load_plugins,
    recording_logger,
)
from tofu_edge.engine.sidecar import BatchProfile, TensorSpec, check_input_shape, read_sidecar
from tofu_edge.errors import InputShapeError
from tofu_edge.stats import LatencyStats

__all__ = ["EngineRunner", "RunResult"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """Outputs of one run and its GPU time (host-to-device copies, execution and device-to-host copies).

    Attributes:
        outputs: Output name -> array (a copy, safe to keep).
        latency_ms: Elapsed time between CUDA events recorded before the first copy and after the last.
    """

    outputs: dict[str, np.ndarray]
    latency_ms: float


class EngineRunner:
    """A deserialized engine with its execution context, CUDA stream, pinned host and device buffers.

    Example:
        with EngineRunner("deit_s_r13.engine") as runner:
            result = runner.run(images)            # images: [1, 3, 224, 224] float32
            stats = runner.benchmark(images)       # CUDA-event timing of execute_async_v3

    Args:
        engine_path: A plan written by ``tofu-edge build`` or ``trtexec --saveEngine``.
        plugins: Plugin libraries the engine's plugin layers need (not needed when they were serialized into it).
        allow_host_code: Allow a plan that carries host code TensorRT runs when loading it (plugin libraries embedded
            with ``--serialize-plugins`` may need it). Only for plans you built yourself.
        device: CUDA device index.

    Raises:
        EngineError: missing, empty or corrupt engine file, no CUDA device, or a CUDA failure.
        MissingDependencyError: TensorRT or cuda-python is not installed.
    """

    def __init__(
        self,
        engine_path: str | Path,
        plugins: str | Path | Sequence[str | Path] | None = None,
        *,
        allow_host_code: bool = False,
        device: int = 0,
    ) -> None:
        self._resources: list[tuple[Any, Any]] = []  # (free function, handle), released in reverse order
        self._buffers: dict[str, tuple[int, int, int]] = {}  # name -> (device pointer, host pointer, bytes)
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise EngineError(f"engine file {self.path} does not exist")
        plan = self.path.read_bytes()
        if not plan:
            raise EngineError(f"engine file {self.path} is empty")
        plugin_paths = check_plugin_paths(plugins)
        self.sidecar = read_sidecar(self.path)
        trt = import_tensorrt()
        self._cudart = import_cudart()
        count = self._call("cudaGetDeviceCount", error_prefix="no usable CUDA device")
        if not 0 <= device < count:
            raise EngineError(f"CUDA device {device} does not exist ({count} found)")
        self._call("cudaSetDevice", device)
        load_plugins(trt, plugin_paths)

        self._logger = recording_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if allow_host_code:
            self._runtime.engine_host_code_allowed = True
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise EngineError(self._deserialize_failure(trt, plugin_paths))
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineError(f"cannot create an execution context for {self.path}: {'; '.join(self._logger.errors)}")
        self.inputs, self.outputs = self._io_specs(trt)
        self.profile = self._batch_profile()
        self._stream = self._acquire("cudaStreamCreate", "cudaStreamDestroy")
        self._start = self._acquire("cudaEventCreate", "cudaEventDestroy")
        self._stop = self._acquire("cudaEventCreate", "cudaEventDestroy")

    def run(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> RunResult:
        """Copy ``inputs`` in, execute, copy the outputs out, all on the runner's stream.

        Args:
            inputs: One array for a single-input engine, else input name -> array. Cast to the engine's dtype.

        Raises:
            InputShapeError: an input is missing or does not fit the engine (or its batch profile).
            EngineError: TensorRT or CUDA failed.

        Shapes:
            inputs: the engine's input shapes, e.g. [B, 3, H, W]
        """
        self._bind(inputs)
        rt, stream = self._cudart, self._stream
        self._call("cudaEventRecord", self._start, stream)
        for spec in self.inputs:
            device, host, nbytes = self._buffers[spec.name]
            self._call("cudaMemcpyAsync", device, host, nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)
        self._execute()
        for spec in self.outputs:
            device, host, nbytes = self._buffers[spec.name]
            self._call("cudaMemcpyAsync", host, device, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)
        self._call("cudaEventRecord", self._stop, stream)
        self._call("cudaEventSynchronize", self._stop)
        latency = self._call("cudaEventElapsedTime", self._start, self._stop)
        outputs = {spec.name: self._host_view(spec).copy() for spec in self.outputs}
        return RunResult(outputs, float(latency))

    def benchmark(
        self, inputs: np.ndarray | Mapping[str, np.ndarray], *, warmup: int = 10, iterations: int = 100
    ) -> LatencyStats:
        """Time ``execute_async_v3`` alone (inputs copied once), each iteration between two CUDA events.

        Raises:
            ValueError: ``iterations`` < 1 or ``warmup`` < 0.
        """
        if iterations < 1 or warmup < 0:
            raise ValueError(f"need iterations >= 1 and warmup >= 0, got {iterations} and {warmup}")
        self.run(inputs)
        for _ in range(warmup):
            self._execute()
        samples = []
        for _ in range(iterations):
            self._call("cudaEventRecord", self._start, self._stream)
            self._execute()
            self._call("cudaEventRecord", self._stop, self._stream)
            self._call("cudaEventSynchronize", self._stop)
            samples.append(self._call("cudaEventElapsedTime", self._start, self._stop))
        return LatencyStats.from_samples(samples)

    def close(self) -> None:
        """Free buffers, events and the stream, then the TensorRT objects. Safe to call twice."""
        for free, handle in reversed(getattr(self, "_resources", [])):
            free(handle)
        self._resources = []
        self._buffers = {}
        for name in ("_context", "_engine", "_runtime"):
            if hasattr(self, name):
                delattr(self, name)

    def __enter__(self) -> EngineRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    # --- internals -------------------------------------------------------------------------------------------------

    def _call(self, function: str, *args: Any, error_prefix: str = "CUDA") -> Any:
        """Call ``cudart.<function>(*args)``; raise on an error status, return the value(s) after it."""
        status, *values = getattr(self._cudart, function)(*args)
        if status != self._cudart.cudaError_t.cudaSuccess:
            name = self._cudart.cudaGetErrorName(status)[1]
            name = name.decode() if isinstance(name, bytes) else str(name)
            raise EngineError(f"{error_prefix}: {function} failed with {name}")
        return values[0] if len(values) == 1 else tuple(values) or None

    def _acquire(self, create: str, destroy: str, *args: Any) -> Any:
        handle = self._call(create, *args)
        self._resources.append((getattr(self._cudart, destroy), handle))
        return handle

    def _execute(self) -> None:
        if not self._context.execute_async_v3(int(self._stream)):
            raise EngineError(f"execute_async_v3 failed for {self.path.name}: {'; '.join(self._logger.errors)}")

    def _io_specs(self, trt: ModuleType) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        inputs, outputs = [], []
        for index in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(index)
            spec = TensorSpec(
                name,
                tuple(int(d) for d in self._engine.get_tensor_shape(name)),
                dtype_name(self._engine.get_tensor_dtype(name)),
            )
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(spec)
        return tuple(inputs), tuple(outputs)

    def _batch_profile(self) -> BatchProfile | None:
        dynamic = [spec for spec in self.inputs if spec.shape and spec.shape[0] < 0]
        if not dynamic:
            return None
        low, opt, high = self._engine.get_tensor_profile_shape(dynamic[0].name, 0)
        return BatchProfile(int(low[0]), int(opt[0]), int(high[0]))

    def _bind(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> None:
        """Check and stage the inputs in pinned memory, size every buffer, and give TensorRT the addresses."""
        if not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                raise InputShapeError(f"the engine has inputs {[s.name for s in self.inputs]}; pass a dict")
            inputs = {self.inputs[0].name: inputs}
        names = {spec.name for spec in self.inputs}
        if set(inputs) != names:
            raise InputShapeError(f"the engine has inputs {sorted(names)}, got {sorted(inputs)}")
        arrays = {}
        for spec in self.inputs:
            array = np.ascontiguousarray(inputs[spec.name], dtype=_numpy_dtype(spec))
            check_input_shape(spec, array.shape, self.profile)
            if not self._context.set_input_shape(spec.name, array.shape):
                raise InputShapeError(f"TensorRT rejected shape {list(array.shape)} for input {spec.name!r}")
            arrays[spec.name] = array
        for spec in (*self.inputs, *self.outputs):
            shape = tuple(self._context.get_tensor_shape(spec.name))
            self._reserve(spec.name, math.prod(shape) * _numpy_dtype(spec).itemsize)
            self._context.set_tensor_address(spec.name, self._buffers[spec.name][0])
        for spec in self.inputs:
            np.copyto(self._host_view(spec), arrays[spec.name])

    def _reserve(self, name: str, nbytes: int) -> None:
        """Make ``name``'s device and pinned host buffers at least ``nbytes`` long (they only grow)."""
        if name in self._buffers and self._buffers[name][2] >= nbytes:
            return
        if name in self._buffers:
            old_device, old_host, _ = self._buffers.pop(name)
            self._release(old_device)
            self._release(old_host)
        size = max(nbytes, 1)
        device = self._acquire("cudaMalloc", "cudaFree", size)
        host = self._acquire("cudaMallocHost", "cudaFreeHost", size)
        self._buffers[name] = (int(device), int(host), size)

    def _release(self, pointer: int) -> None:
        for index, (free, handle) in enumerate(self._resources):
            if int(handle) == pointer:
                free(handle)
                del self._resources[index]
                return

    def _host_view(self, spec: TensorSpec) -> np.ndarray:
        """The pinned host buffer of ``spec`` as an array of its current shape (no copy)."""
        shape = tuple(self._context.get_tensor_shape(spec.name))
        dtype = _numpy_dtype(spec)
        _, host, _ = self._buffers[spec.name]
        count = math.prod(shape)
        raw = (ctypes.c_uint8 * (count * dtype.itemsize)).from_address(host)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def _deserialize_failure(self, trt: ModuleType, plugin_paths: tuple[Path, ...]) -> str:
        """Why a plan did not deserialize, with the likely cause when the sidecar tells it."""
        message = f"cannot deserialize {self.path} (corrupt, or not a TensorRT {trt.__version__} plan for this GPU)"
        if self._logger.errors:
            message += ": " + "; ".join(self._logger.errors)
        built_with = (self.sidecar or {}).get("tensorrt_version")
        if built_with and built_with != trt.__version__:
            message += f"; it was built with TensorRT {built_with}: rebuild it with this one"
        if (self.sidecar or {}).get("plugins") and not plugin_paths and not self.sidecar.get("plugins_serialized"):
            message += f"; it was built with plugins {self.sidecar['plugins']}: pass --plugins"
        return message


def _numpy_dtype(spec: TensorSpec) -> np.dtype:
    try:
        return np.dtype(spec.dtype)
    except TypeError:
        raise EngineError(f"tensor {spec.name!r} has dtype {spec.dtype}, which numpy cannot hold") from None
