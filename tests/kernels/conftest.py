"""Builds kernels/ once per test session and wraps its two libraries through ctypes.

The build needs cmake, nvcc and the TensorRT headers: ``-DTensorRT_INCLUDE_DIR`` comes from the
``TensorRT_INCLUDE_DIR`` environment variable, else from the ``kernel-lens`` package (TensorRT 10.14 headers).
Set ``TOFU_KERNELS_BUILD_DIR`` to reuse a build directory between sessions (incremental builds).

The onnxruntime custom ops (kernels/onnxruntime, no CUDA) are built separately, by the ``ort_build`` fixture of
tests/conftest.py (tests/kernels/ort_build.py); ``TOFU_ORT_BUILD_DIR`` reuses their build directory.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
KERNELS_DIR = REPO / "kernels"
SPECS_PATH = REPO / "tofu_edge" / "export" / "plugin_specs.json"
CUDA_ARCHS = ("87", "89", "90")
HEADERS_REQUIREMENT = "kernel-lens==2.0.1"
JSON_CAPACITY = 1 << 16

# TensorRT enum values (NvInferRuntimeBase.h, NvInferRuntime.h, NvInferPluginBase.h).
DT_FLOAT, DT_HALF, DT_INT8, DT_INT32, DT_BOOL = 0, 1, 2, 3, 4
FORMAT_LINEAR, FORMAT_CHW2, FORMAT_HWC8 = 0, 1, 2
FIELD_FLOAT32, FIELD_INT8, FIELD_INT16, FIELD_INT32, FIELD_CHAR, FIELD_INT64 = 1, 3, 4, 5, 6, 10
PHASE_BUILD, PHASE_RUNTIME = 0, 1
SEVERITY_ERROR = 1

_build_seconds: list[float] = []


@dataclass(frozen=True)
class KernelBuild:
    """Where the session's build of kernels/ is.

    Args:
        build_dir: CMake build directory.
        plugin_library: ``libtofu_edge_plugins.so``.
        host_library: ``libtofu_edge_host.so``.
        seconds: Wall time of configure + build (0 when nothing was rebuilt).
    """

    build_dir: Path
    plugin_library: Path
    host_library: Path
    seconds: float


def tensorrt_include_dir() -> Path | None:
    """The TensorRT headers: $TensorRT_INCLUDE_DIR, else those of the kernel-lens package, else None."""
    from_env = os.environ.get("TensorRT_INCLUDE_DIR")
    if from_env:
        candidate = Path(from_env)
    else:
        spec = importlib.util.find_spec("kernel_lens")  # located, not imported: it imports torch and triton
        if spec is None or spec.origin is None:
            return None
        candidate = Path(spec.origin).parent / "include" / "tensorrt"
    return candidate if (candidate / "NvInferRuntime.h").is_file() else None


def missing_prerequisite() -> str | None:
    """Why the kernels cannot be built here, or None."""
    for tool in ("cmake", "nvcc"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (needed to build kernels/)"
    if tensorrt_include_dir() is None:
        return f"no TensorRT headers: set TensorRT_INCLUDE_DIR or `pip install {HEADERS_REQUIREMENT}`"
    return None


def cuda_archs() -> list[str]:
    """CUDA_ARCHS, plus the local GPU's arch when there is one (so the gpu tests run on any GPU)."""
    archs = list(CUDA_ARCHS)
    import torch  # only here: the build itself needs no torch

    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        if f"{major}{minor}" not in archs:
            archs.append(f"{major}{minor}")
    return archs


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{(result.stdout + result.stderr)[-6000:]}")


@pytest.fixture(scope="session")
def kernel_build(tmp_path_factory: pytest.TempPathFactory) -> KernelBuild:
    """Configures and builds kernels/ (both libraries, all of CUDA_ARCHS) once per session."""
    reason = missing_prerequisite()
    if reason is not None:
        pytest.skip(reason)
    reuse = os.environ.get("TOFU_KERNELS_BUILD_DIR")
    build_dir = Path(reuse) if reuse else tmp_path_factory.mktemp("kernels-build")
    start = time.perf_counter()
    _run(
        [
            "cmake",
            "-S",
            str(KERNELS_DIR),
            "-B",
            str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DTensorRT_INCLUDE_DIR={tensorrt_include_dir()}",
            f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(cuda_archs())}",
        ]
    )
    _run(["cmake", "--build", str(build_dir), "--parallel", str(os.cpu_count() or 2)])
    seconds = time.perf_counter() - start
    _build_seconds.append(seconds)
    return KernelBuild(
        build_dir=build_dir,
        plugin_library=build_dir / "libtofu_edge_plugins.so",
        host_library=build_dir / "libtofu_edge_host.so",
        seconds=seconds,
    )


def pytest_terminal_summary(terminalreporter) -> None:
    if _build_seconds:
        terminalreporter.write_line(f"kernels: cmake configure + build took {_build_seconds[0]:.1f} s")


@pytest.fixture(scope="session")
def specs() -> dict:
    """tofu_edge/export/plugin_specs.json, the plugin contract."""
    return json.loads(SPECS_PATH.read_text())


@pytest.fixture(scope="session")
def host(kernel_build: KernelBuild) -> HostLibrary:
    """libtofu_edge_host.so, with libtofu_edge_plugins.so loaded into its probes."""
    return HostLibrary(kernel_build.host_library, kernel_build.plugin_library)


Attributes = dict[str, "int | tuple[int, int]"]  # name -> value (int32) or (value, PluginFieldType code)

_I32P = ctypes.POINTER(ctypes.c_int32)
_I64P = ctypes.POINTER(ctypes.c_int64)
_CHARPP = ctypes.POINTER(ctypes.c_char_p)
_ATTRS = [ctypes.c_char_p, _CHARPP, _I64P, _I32P, ctypes.c_int32]  # plugin, names, values, types, count


class HostLibrary:
    """ctypes view of libtofu_edge_host.so: the plugins' math on host memory and probes of the plugin objects."""

    def __init__(self, path: Path, plugin_library: Path) -> None:
        self.lib = ctypes.CDLL(str(path))
        signatures = {
            "tofu_host_match_f32": [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32]
            + [ctypes.c_void_p] * 2,
            "tofu_host_match_f16": [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32]
            + [ctypes.c_void_p] * 2,
            "tofu_host_merge_f32": [ctypes.c_void_p] * 4 + [ctypes.c_int32] * 5 + [ctypes.c_void_p] * 2,
            "tofu_host_merge_f16": [ctypes.c_void_p] * 4 + [ctypes.c_int32] * 5 + [ctypes.c_void_p] * 2,
            "tofu_host_last_error": [],
            "tofu_host_eps": [],
            "tofu_probe_load": [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int32],
            "tofu_probe_creators": [ctypes.c_char_p, ctypes.c_int32],
            "tofu_probe_create": _ATTRS + [ctypes.c_int32, ctypes.c_char_p, ctypes.c_int32],
            "tofu_probe_output_shapes": _ATTRS + [_I64P, _I32P, ctypes.c_int32, ctypes.c_char_p, ctypes.c_int32],
            "tofu_probe_supports_format": _ATTRS + [ctypes.c_int32, _I32P, _I32P, ctypes.c_int32, ctypes.c_int32],
            "tofu_probe_output_types": _ATTRS + [_I32P, ctypes.c_int32, _I32P, ctypes.c_int32],
            "tofu_probe_configure": _ATTRS + [ctypes.c_int32, _I64P, _I32P, _I32P, ctypes.c_int32, ctypes.c_int32],
            "tofu_probe_take_log": [ctypes.c_char_p, ctypes.c_int32],
        }
        for name, argtypes in signatures.items():
            function = getattr(self.lib, name)
            function.argtypes = argtypes
            function.restype = ctypes.c_int32
        self.lib.tofu_host_last_error.restype = ctypes.c_char_p
        self.lib.tofu_host_eps.restype = ctypes.c_float
        message = ctypes.create_string_buffer(1024)
        if self.lib.tofu_probe_load(str(plugin_library).encode(), message, len(message)) != 0:
            raise RuntimeError(f"cannot load {plugin_library}: {message.value.decode()}")

    # Math on host memory.

    def match(self, scores: np.ndarray, num_tokens: int, num_prefix: int, r: int) -> tuple[np.ndarray, np.ndarray]:
        """TofuMatch on the host. scores: [B, |A|, |B|] float32 or float16; returns order [B, N], dst_slot [B, r]."""
        scores = np.ascontiguousarray(scores)
        function = self.lib.tofu_host_match_f16 if scores.dtype == np.float16 else self.lib.tofu_host_match_f32
        assert scores.dtype in (np.float16, np.float32)
        batch = scores.shape[0]
        order = np.full((batch, num_tokens), -1, np.int32)
        dst_slot = np.full((batch, max(r, 0)), -1, np.int32)
        status = function(scores.ctypes.data, batch, num_tokens, num_prefix, r, order.ctypes.data, dst_slot.ctypes.data)
        if status != 0:
            raise ValueError(self.last_error())
        return order, dst_slot

    def merge(
        self, x: np.ndarray, size: np.ndarray, order: np.ndarray, dst_slot: np.ndarray, mode: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """TofuMerge on the host. x: [B, N, C], size: [B, N, 1] (float32 or float16); returns x_out, size_out."""
        x, size = np.ascontiguousarray(x), np.ascontiguousarray(size)
        order = np.ascontiguousarray(order, dtype=np.int32)
        dst_slot = np.ascontiguousarray(dst_slot, dtype=np.int32)
        assert x.dtype == size.dtype and x.dtype in (np.float16, np.float32)
        batch, num_tokens, channels = x.shape
        r = dst_slot.shape[1]
        x_out = np.zeros((batch, num_tokens - r, channels), x.dtype)
        size_out = np.zeros((batch, num_tokens - r, 1), x.dtype)
        function = self.lib.tofu_host_merge_f16 if x.dtype == np.float16 else self.lib.tofu_host_merge_f32
        status = function(
            x.ctypes.data,
            size.ctypes.data,
            order.ctypes.data,
            dst_slot.ctypes.data,
            batch,
            num_tokens,
            channels,
            r,
            mode,
            x_out.ctypes.data,
            size_out.ctypes.data,
        )
        if status != 0:
            raise ValueError(self.last_error())
        return x_out, size_out

    def last_error(self) -> str:
        return self.lib.tofu_host_last_error().decode()

    def eps(self) -> float:
        return float(self.lib.tofu_host_eps())

    # Probes of the plugin objects.

    @staticmethod
    def _attributes(plugin: str, attributes: Attributes) -> list:
        names, values, types = [], [], []
        for name, value in attributes.items():
            value, field_type = value if isinstance(value, tuple) else (value, FIELD_INT32)
            names.append(name.encode())
            values.append(value)
            types.append(field_type)
        count = len(names)
        return [
            plugin.encode(),
            (ctypes.c_char_p * max(count, 1))(*names),
            (ctypes.c_int64 * max(count, 1))(*values),
            (ctypes.c_int32 * max(count, 1))(*types),
            count,
        ]

    @staticmethod
    def _json(buffer: ctypes.Array) -> object:
        return json.loads(buffer.value.decode())

    def creators(self) -> list[dict]:
        """What getCreators returns: interface, name, version, namespace and field names of each creator."""
        buffer = ctypes.create_string_buffer(JSON_CAPACITY)
        assert self.lib.tofu_probe_creators(buffer, JSON_CAPACITY) == 0
        return self._json(buffer)

    def create(self, plugin: str, attributes: Attributes, phase: int = PHASE_BUILD) -> dict:
        """createPlugin; the plugin's strings, serialized fields and those of its round trip, clone and attachment."""
        buffer = ctypes.create_string_buffer(JSON_CAPACITY)
        status = self.lib.tofu_probe_create(*self._attributes(plugin, attributes), phase, buffer, JSON_CAPACITY)
        assert status in (0, 1), status
        return self._json(buffer)

    def output_shapes(self, plugin: str, attributes: Attributes, inputs: list[list[int]]) -> dict:
        """getOutputShapes through the constant-folding fake IExprBuilder; -1 in inputs is a symbolic extent."""
        flat = [d for dims in inputs for d in dims]
        buffer = ctypes.create_string_buffer(JSON_CAPACITY)
        status = self.lib.tofu_probe_output_shapes(
            *self._attributes(plugin, attributes),
            (ctypes.c_int64 * max(len(flat), 1))(*flat),
            (ctypes.c_int32 * len(inputs))(*[len(dims) for dims in inputs]),
            len(inputs),
            buffer,
            JSON_CAPACITY,
        )
        assert status == 0, f"no {plugin} plugin from {attributes}"
        return self._json(buffer)

    def supports_format(
        self, plugin: str, attributes: Attributes, pos: int, types: list[int], formats: list[int], nb_inputs: int
    ) -> bool:
        answer = self.lib.tofu_probe_supports_format(
            *self._attributes(plugin, attributes),
            pos,
            (ctypes.c_int32 * len(types))(*types),
            (ctypes.c_int32 * len(formats))(*formats),
            nb_inputs,
            len(types) - nb_inputs,
        )
        assert answer in (0, 1), f"no {plugin} plugin from {attributes}"
        return answer == 1

    def output_types(
        self, plugin: str, attributes: Attributes, input_types: list[int], nb_outputs: int
    ) -> tuple[int, list[int]]:
        out = (ctypes.c_int32 * nb_outputs)()
        status = self.lib.tofu_probe_output_types(
            *self._attributes(plugin, attributes),
            (ctypes.c_int32 * len(input_types))(*input_types),
            len(input_types),
            out,
            nb_outputs,
        )
        assert status != -100, f"no {plugin} plugin from {attributes}"
        return status, list(out)

    def configure(
        self, plugin: str, attributes: Attributes, stage: int, dims: list[list[int]], types: list[int], nb_inputs: int
    ) -> int:
        """configurePlugin (stage 0) or onShapeChange (stage 1); the plugin's status."""
        flat = [d for shape in dims for d in shape]
        status = self.lib.tofu_probe_configure(
            *self._attributes(plugin, attributes),
            stage,
            (ctypes.c_int64 * max(len(flat), 1))(*flat),
            (ctypes.c_int32 * len(dims))(*[len(shape) for shape in dims]),
            (ctypes.c_int32 * len(types))(*types),
            nb_inputs,
            len(types) - nb_inputs,
        )
        assert status != -100, f"no {plugin} plugin from {attributes}"
        return status

    def take_log(self) -> list[dict]:
        """Messages the plugins logged since the last call."""
        buffer = ctypes.create_string_buffer(JSON_CAPACITY)
        assert self.lib.tofu_probe_take_log(buffer, JSON_CAPACITY) == 0
        return self._json(buffer)
