"""`ort_session`: the one way tofu-edge opens an ONNX file in onnxruntime (parity checks, bench, eval).

Needs onnx and onnxruntime only: a portable-flavour file opens without torch. A plugin-flavour file
(``TofuMatch``/``TofuMerge`` nodes) gets the native ops of ``libtofu_edge_ort.so`` where that library is built
(`tofu_edge.export.ort_ops`), else the loop reference registered as onnxruntime-extensions Python ops, which needs
torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tofu_edge.choices import Flavor, OrtProvider, parse_choice
from tofu_edge.errors import ConfigError, ExportError, MissingDependencyError
from tofu_edge.export.external_data import external_data_problem
from tofu_edge.export.metadata import MetadataKey, unprefixed
from tofu_edge.export.ort_ops import BUILD_HINT, find_ort_ops, note_reference_fallback

__all__ = ["ort_session", "onnx_metadata", "available_provider"]


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``tofu_edge.*`` entries of an ONNX file's ``metadata_props``, prefix removed (weights are not loaded).

    Raises:
        ExportError: the file is missing or is not an ONNX model.
    """
    return unprefixed(_load_graph(Path(path)).metadata_props)


def _load_graph(path: Path) -> Any:
    """The ``onnx.ModelProto`` at ``path`` without its external data (headers only for large weights).

    Raises:
        ExportError: the file is missing or is not an ONNX model.
    """
    import onnx
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise ExportError(f"ONNX file {path} does not exist")
    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError) as error:
        raise ExportError(f"cannot read ONNX file {path}: {error or type(error).__name__}") from None


def ort_session(
    path: str | Path,
    *,
    provider: OrtProvider | str = OrtProvider.CPU,
    threads: int | None = None,
    spinning: bool = False,
    ort_ops: str | Path | None = None,
) -> Any:
    """An onnxruntime ``InferenceSession`` on one execution provider (plus the CPU as fallback for GPU ones).

    Idle-thread spinning is off unless ``spinning``: sessions timed together in one process slow each other down
    when their idle threads spin. A one-model process with idle time between calls ran faster with it on
    (benchmarks/README.md, ``ort_spinning.py``). One inter-op thread; ``threads`` intra-op threads (onnxruntime's
    default when ``None``).

    Args:
        path: The ONNX file (portable or plugin flavour).
        provider: ``cpu``, ``cuda`` or ``tensorrt``.
        threads: Intra-op threads.
        spinning: Let idle onnxruntime threads spin.
        ort_ops: The native ops library for plugin-flavour files (default: `find_ort_ops`'s search).

    Raises:
        ConfigError: an unknown provider or a thread count below 1.
        ExportError: the file is missing or unreadable, or its external data file is missing or truncated.
        MissingDependencyError: onnxruntime, or the provider in this onnxruntime build, or (for a plugin-flavour
            file) a usable native ops library given explicitly, or torch / onnxruntime-extensions without one.
    """
    provider = available_provider(provider)
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    proto = _load_graph(Path(path))
    problem = external_data_problem(Path(path), proto)
    if problem is not None:
        raise ExportError(problem)
    flavor = unprefixed(proto.metadata_props).get(MetadataKey.FLAVOR, Flavor.PORTABLE.value)
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if flavor == Flavor.PLUGIN.value:
        _enable_plugin_ops(options, ort_ops)
    providers = [provider.execution_provider]
    if provider is not OrtProvider.CPU:
        providers.append(OrtProvider.CPU.execution_provider)
    return ort.InferenceSession(str(path), options, providers=providers)


def available_provider(provider: OrtProvider | str) -> OrtProvider:
    """``provider`` as an `OrtProvider`, checked to be in this onnxruntime build (fails before any slow work).

    Raises:
        ConfigError: an unknown provider.
        MissingDependencyError: onnxruntime is not installed, or this build lacks the provider.
    """
    provider = parse_choice(OrtProvider, provider, "onnxruntime provider")
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError("onnxruntime is not installed: pip install onnxruntime") from None
    available = ort.get_available_providers()
    if provider.execution_provider not in available:
        raise MissingDependencyError(
            f"onnxruntime {ort.__version__} has no {provider.execution_provider} (available: {', '.join(available)}); "
            "install onnxruntime-gpu for CUDA/TensorRT, or use the cpu provider"
        )
    return provider


def _enable_plugin_ops(options: Any, ort_ops: str | Path | None) -> None:
    """Register the native ops library where there is one, else the plugin nodes' loop reference (torch) with
    onnxruntime-extensions."""
    library = find_ort_ops(ort_ops)
    if library is not None:
        library.register(options)
        return
    try:
        from tofu_edge.export.plugin import enable_reference_ops
    except ImportError as error:
        raise MissingDependencyError(
            f"a plugin-flavour ONNX file runs in onnxruntime through the native ops library (not built: {BUILD_HINT}) "
            f"or the loop reference, which needs torch and onnxruntime-extensions ({error}); run the portable flavour "
            "instead, or build the library"
        ) from None
    note_reference_fallback()
    enable_reference_ops(options)
