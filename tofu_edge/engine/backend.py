"""TensorRT and CUDA behind one door: lazy imports with install hints, plugin loading, logging, error text.

Nothing here imports TensorRT or cuda-python at module import time, so the rest of tofu-edge (and its tests)
work on a machine that has neither.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from tofu_edge.errors import MissingDependencyError, TofuError

__all__ = [
    "EngineError",
    "TENSORRT_HINT",
    "CUDA_PYTHON_HINT",
    "import_tensorrt",
    "import_cudart",
    "check_plugin_paths",
    "load_plugins",
    "recording_logger",
    "dtype_name",
    "format_parser_error",
]

_log = logging.getLogger(__name__)

TENSORRT_HINT = (
    "TensorRT 10 is not installed: `pip install tensorrt --extra-index-url https://pypi.nvidia.com` "
    "(needs an NVIDIA GPU and driver), or use NVIDIA's container nvcr.io/nvidia/tensorrt:<tag>-py3 "
    "(see the Dockerfile); on a Jetson, JetPack 6.1+ ships it (python3-libnvinfer)"
)
CUDA_PYTHON_HINT = (
    "cuda-python is not installed: `pip install cuda-python==<your CUDA major.minor>` "
    "(e.g. cuda-python==12.8.0 for CUDA 12.8), or `pip install 'tofu-edge[trt]'`"
)

# TensorRT DataType member name -> numpy-style name, as written in sidecars and shown to users
_DTYPE_NAMES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "FP8": "float8_e4m3",
    "INT4": "int4",
    "FP4": "float4_e2m1",
}


class EngineError(TofuError, RuntimeError):
    """An engine cannot be built, read or run (parser errors, corrupt plan, CUDA failure); the message says why."""


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module.

    Raises:
        MissingDependencyError: TensorRT (or its native libraries) cannot be imported; the message says how to
            install it.
    """
    try:
        import tensorrt
    except (ImportError, OSError) as error:
        raise MissingDependencyError(f"{TENSORRT_HINT} ({_first_line(error)})") from None
    return tensorrt


def import_cudart() -> ModuleType:
    """cuda-python's CUDA runtime bindings (``cuda.bindings.runtime``; ``cuda.cudart`` before cuda-python 12.6).

    Raises:
        MissingDependencyError: cuda-python is not installed.
    """
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as error:
            raise MissingDependencyError(f"{CUDA_PYTHON_HINT} ({_first_line(error)})") from None
    return runtime


def check_plugin_paths(plugins: str | Path | Sequence[str | Path] | None) -> tuple[Path, ...]:
    """Normalise ``plugins`` to a tuple of existing library files, checked before any TensorRT work.

    Raises:
        EngineError: a path is missing or is a folder.
    """
    if plugins is None:
        return ()
    paths = (Path(plugins),) if isinstance(plugins, (str, Path)) else tuple(Path(p) for p in plugins)
    for path in paths:
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise EngineError(
                f"plugin library {path} {what}; build it with `cmake -S kernels -B build/kernels && "
                "cmake --build build/kernels` (libtofu_edge_plugins.so)"
            )
    return paths


def load_plugins(trt: ModuleType, paths: Iterable[Path]) -> None:
    """Load each plugin library into TensorRT's global plugin registry (``IPluginRegistry::loadLibrary``).

    The libraries export ``getCreators`` / ``setLoggerFinder``, so this works for IPluginV3 plugins linked without
    libnvinfer; loading the same library twice is harmless.

    Raises:
        EngineError: TensorRT refused a library (wrong TensorRT major version, missing symbols, wrong architecture).
    """
    registry = trt.get_plugin_registry()
    for path in paths:
        if registry.load_library(str(path.resolve())) is None:
            raise EngineError(
                f"TensorRT {trt.__version__} could not load plugin library {path} (built for another TensorRT or "
                "CUDA version, or not a TensorRT plugin library); rebuild it against this TensorRT"
            )
        _log.info("loaded plugin library %s", path)


def recording_logger(trt: ModuleType) -> Any:
    """A ``trt.ILogger`` that keeps error messages (in ``.errors``) and forwards the rest to Python logging."""

    class _RecordingLogger(trt.ILogger):
        def __init__(self) -> None:
            super().__init__()
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity <= trt.ILogger.Severity.ERROR:
                self.errors.append(msg)
                _log.debug("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                _log.warning("TensorRT: %s", msg)
            else:
                _log.debug("TensorRT: %s", msg)

    return _RecordingLogger()


def dtype_name(dtype: Any) -> str:
    """``trt.DataType.HALF`` -> ``"float16"`` (unknown members keep TensorRT's own name, lower-cased)."""
    name = getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])
    return _DTYPE_NAMES.get(name, name.lower())


def format_parser_error(error: Any) -> str:
    """One ``trt.ParserError`` in full: ``node 12 'name' (Op): CODE: description [importer file:line]``.

    TensorRT leaves the node index at -1 for errors that are not about one node (a bad model file, an unknown
    opset); then the importer function stands in for the node.
    """
    code = str(error.code()).rsplit(".", 1)[-1]
    if error.node() >= 0:
        where = f"node {error.node()} {error.node_name()!r} ({error.node_operator()})"
    else:
        where = f"graph ({error.func()})" if error.func() else "graph"
    source = f" [{error.func()} {Path(error.file()).name}:{error.line()}]" if error.file() else ""
    return f"{where}: {code}: {error.desc()}{source}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
