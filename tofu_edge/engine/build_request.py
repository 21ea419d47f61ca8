"""What `build_engine` checks before TensorRT is imported: the ONNX file (and whether it is explicitly quantized),
the batch profile, the plugin libraries, the workspace and the files it will write."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from tofu_edge.engine.backend import check_plugin_paths
from tofu_edge.engine.sidecar import BatchProfile, OnnxInfo, inspect_onnx, resolve_profile
from tofu_edge.errors import ConfigError
from tofu_edge.export.metadata import MetadataKey
from tofu_edge.export.quantize import Int8Target
from tofu_edge.files import check_writable

__all__ = ["BuildRequest", "check_build_request"]

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class BuildRequest:
    """A build's inputs, checked before TensorRT is imported.

    Attributes:
        info: The ONNX file as the builder will see it.
        output: The plan to write.
        quantized: The graph has Q/DQ nodes (explicit quantization).
        profile: The batch profile, ``None`` for a static batch.
        plugins: Plugin libraries to load.
        serialize_plugins: Embed them in the plan.
        workspace_mib: The workspace limit, ``None`` for TensorRT's default.
        timing_cache: The timing cache to read and write back, if any.
    """

    info: OnnxInfo
    output: Path
    quantized: bool
    profile: BatchProfile | None
    plugins: tuple[Path, ...]
    serialize_plugins: bool
    workspace_mib: int | None
    timing_cache: Path | None


def check_build_request(
    onnx_path: str | Path,
    output: str | Path,
    *,
    plugins: str | Path | Sequence[str | Path] | None,
    serialize_plugins: bool,
    batches: tuple[int | None, int | None, int | None],
    workspace_mib: int | None,
    timing_cache: str | Path | None,
) -> BuildRequest:
    """Every input of `build_engine` checked, without TensorRT: the ONNX file, its quantization, the batch profile,
    the plugin libraries, the workspace and the files to write.

    Raises:
        EngineError: a missing or corrupt ONNX file, a missing plugin library.
        ConfigError: a bad batch profile or workspace, ``serialize_plugins`` without ``plugins``, an INT8 file made
            for onnxruntime on CPUs.
        OutputError: ``output`` or ``timing_cache`` cannot be written.
    """
    output = Path(output)
    info = inspect_onnx(onnx_path)
    quantized = _explicitly_quantized(info)
    profile = resolve_profile(info, *batches)
    plugin_paths = check_plugin_paths(plugins)
    if serialize_plugins and not plugin_paths:
        raise ConfigError("--serialize-plugins needs the plugin library (--plugins)")
    if workspace_mib is not None and workspace_mib < 1:
        raise ConfigError(f"workspace must be at least 1 MiB, got {workspace_mib}")
    cache_path = Path(timing_cache) if timing_cache is not None else None
    check_writable(output)
    if cache_path is not None:
        check_writable(cache_path)
    return BuildRequest(info, output, quantized, profile, plugin_paths, serialize_plugins, workspace_mib, cache_path)


def _explicitly_quantized(info: OnnxInfo) -> bool:
    """Whether the graph has Q/DQ nodes (weights are not loaded).

    Raises:
        ConfigError: the file is INT8 for onnxruntime on CPUs (dynamic quantization), which TensorRT cannot parse.
    """
    int8 = info.metadata.get(MetadataKey.INT8)
    if isinstance(int8, dict) and int8.get("target") == Int8Target.ORT_CPU.value:
        raise ConfigError(
            f"{info.path.name} is INT8 for onnxruntime on CPUs ({int8.get('recipe')} recipe), which TensorRT cannot "
            f"build; export it for TensorRT: tofu-edge export ... --int8 --int8-target {Int8Target.TENSORRT.value}"
        )
    model = onnx.load(str(info.path), load_external_data=False)
    return any(node.op_type in QDQ_OPS for node in model.graph.node)
