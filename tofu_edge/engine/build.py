"""`build_engine`: an ONNX file (portable or plugin flavour) as a plain TensorRT plan plus a JSON sidecar."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from tofu_edge.engine.backend import (
    EngineError,
    dtype_name,
    format_parser_error,
    import_tensorrt,
    load_plugins,
    recording_logger,
)
from tofu_edge.engine.build_request import BuildRequest, check_build_request
from tofu_edge.engine.preprocess import PreprocessConfig
from tofu_edge.engine.sidecar import (
    BatchProfile,
    OnnxInfo,
    TensorSpec,
    preprocess_for,
    sidecar_path,
)
from tofu_edge.errors import ConfigError
from tofu_edge.export.plugin_spec import plugin_op_types
from tofu_edge.files import atomic_outputs

__all__ = ["BuildReport", "build_engine"]

_log = logging.getLogger(__name__)

MIB = 1 << 20


@dataclass(frozen=True)
class BuildReport:
    """What `build_engine` wrote; ``to_dict()`` is the sidecar's content.

    Attributes:
        engine_path: The serialized plan (plain TensorRT bytes: ``trtexec --loadEngine`` reads it).
        sidecar_path: The JSON beside it (``<engine file name>.json``).
        onnx: The ONNX file the engine was built from (inputs, outputs, ``tofu_edge.*`` metadata, sha256).
        inputs: Network inputs as TensorRT parsed them (``-1`` for the dynamic batch axis).
        outputs: Network outputs.
        precision: ``"fp32"`` or ``"fp16"`` (fp16 kernels allowed; TensorRT still picks per layer); ``"int8"`` for
            an explicitly quantized graph (Q/DQ nodes: their layers run in INT8, the others as typed), ``"int8+fp16"``
            when fp16 kernels are allowed for its float layers.
        strongly_typed: The network was created strongly typed (precision from the graph, no precision flags): how
            TensorRT builds an explicitly quantized graph unless fp16 is asked for.
        tf32: TF32 tensor-core kernels allowed for fp32 layers (TensorRT's default; ``False`` for strict fp32).
        profile: The batch profile, ``None`` for a static batch.
        tensorrt_version: ``tensorrt.__version__`` of the builder.
        plugins: Plugin libraries loaded for the build.
        plugins_serialized: The libraries are embedded in the plan (``config.plugins_to_serialize``).
        workspace_mib: The workspace limit, ``None`` for TensorRT's default (the device's memory).
        timing_cache: The timing cache read and updated, if any.
        preprocess: How images must be prepared for this engine.
        engine_bytes: Size of the plan.
        seconds: Wall-clock ``parse``, ``build`` and ``total`` times (host-side work: a plain clock is right).
    """

    engine_path: Path
    sidecar_path: Path
    onnx: OnnxInfo
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    precision: str
    profile: BatchProfile | None
    tensorrt_version: str
    tf32: bool = True
    strongly_typed: bool = False
    plugins: tuple[Path, ...] = ()
    plugins_serialized: bool = False
    workspace_mib: int | None = None
    timing_cache: Path | None = None
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    engine_bytes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The sidecar: JSON-ready, paths as strings."""
        return {
            "engine": self.engine_path.name,
            "engine_bytes": self.engine_bytes,
            "tensorrt_version": self.tensorrt_version,
            "precision": self.precision,
            "tf32": self.tf32,
            "strongly_typed": self.strongly_typed,
            "batch_profile": self.profile.to_dict() if self.profile else None,
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
            "plugins": [str(path) for path in self.plugins],
            "plugins_serialized": self.plugins_serialized,
            "workspace_mib": self.workspace_mib,
            "timing_cache": str(self.timing_cache) if self.timing_cache else None,
            "preprocess": self.preprocess.to_dict(),
            "onnx": {"path": str(self.onnx.path), "sha256": self.onnx.sha256, "metadata": self.onnx.metadata},
            "build_seconds": self.seconds,
        }


def build_engine(
    onnx_path: str | Path,
    output: str | Path,
    *,
    fp16: bool = False,
    tf32: bool = True,
    plugins: str | Path | Sequence[str | Path] | None = None,
    serialize_plugins: bool = False,
    min_batch: int | None = None,
    opt_batch: int | None = None,
    max_batch: int | None = None,
    workspace_mib: int | None = None,
    timing_cache: str | Path | None = None,
) -> BuildReport:
    """Build a TensorRT engine from an ONNX file and write the plan and its sidecar atomically.

    Every input is checked before TensorRT is imported, so bad arguments fail fast and the same way on a machine
    without it. The plan is written exactly as TensorRT serialized it, with no header of ours.

    An INT8 graph with Q/DQ nodes (``tofu-edge export --int8 --int8-target tensorrt``) is explicitly quantized: it
    needs no calibrator, and its network is created strongly typed (TensorRT's way for explicit quantization, no
    precision flags); with ``fp16`` it is created weakly typed with the INT8 and FP16 flags, so that its float layers
    may run in fp16.

    Args:
        onnx_path: The ONNX file (portable, or plugin flavour with ``plugins``).
        output: The plan to write; the sidecar goes to ``<output name>.json``.
        fp16: Allow fp16 kernels. Refused, not ignored, on a GPU without fast fp16.
        tf32: Allow TF32 for fp32 layers on Ampere and later (TensorRT's default); ``False`` keeps them strictly fp32.
        plugins: Plugin libraries to load (``libtofu_edge_plugins.so``) before parsing.
        serialize_plugins: Embed the plugin libraries in the plan (needs ``plugins``).
        min_batch: Smallest batch of a dynamic-batch ONNX file (default 1).
        opt_batch: Batch the kernels are tuned for (default ``max_batch``).
        max_batch: Largest batch (default the largest size given, else 1).
        workspace_mib: Workspace memory limit in MiB.
        timing_cache: A timing cache file: read when it exists, then written back with this build's timings.

    Returns:
        The report (also the sidecar's content).

    Raises:
        EngineError: missing or corrupt ONNX, missing plugin library, parser errors (all of them, with node and op),
            or a failed build.
        ConfigError: bad batch profile or workspace, ``serialize_plugins`` without ``plugins``, fp16 on a GPU
            without fast fp16, an INT8 file made for onnxruntime on CPUs.
        OutputError: ``output`` cannot be written.
        MissingDependencyError: TensorRT is not installed (the message says how to get it).
    """
    started = time.perf_counter()
    request = check_build_request(
        onnx_path,
        output,
        plugins=plugins,
        serialize_plugins=serialize_plugins,
        batches=(min_batch, opt_batch, max_batch),
        workspace_mib=workspace_mib,
        timing_cache=timing_cache,
    )
    trt = import_tensorrt()
    load_plugins(trt, request.plugins)
    logger = recording_logger(trt)
    builder = trt.Builder(logger)
    if fp16:
        _check_fast_fp16(trt, builder)
    # explicit batch is the only mode in TensorRT 10; Q/DQ graphs are built strongly typed, as TensorRT advises
    # (TensorRT 8.x has no strong typing: there, as with fp16, the INT8 flag makes the Q/DQ layers INT8)
    strong = _strongly_typed_flag(trt) if request.quantized and not fp16 else None
    network = builder.create_network(strong or 0)
    parser = trt.OnnxParser(network, logger)  # holds the weights the network points to: alive until the build ends
    inputs, outputs = _parse(parser, network, request)
    parsed_at = time.perf_counter()

    config = builder.create_builder_config()
    _set_precision(trt, config, fp16=fp16, tf32=tf32, int8=request.quantized and strong is None)
    _set_limits(trt, builder, config, request, inputs)
    cache = _attach_timing_cache(config, request.timing_cache)
    logger.errors.clear()  # keep only the builder's errors from here on
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        details = "; ".join(logger.errors) or "no error was logged"
        raise EngineError(f"TensorRT could not build {request.info.path.name}: {details}")
    built_at = time.perf_counter()

    quantized = request.quantized
    report = BuildReport(
        engine_path=request.output,
        sidecar_path=sidecar_path(request.output),
        onnx=request.info,
        inputs=inputs,
        outputs=outputs,
        precision=("int8+fp16" if fp16 else "int8") if quantized else "fp16" if fp16 else "fp32",
        strongly_typed=strong is not None,
        profile=request.profile,
        tensorrt_version=str(trt.__version__),
        tf32=tf32,
        plugins=request.plugins,
        plugins_serialized=serialize_plugins,
        workspace_mib=workspace_mib,
        timing_cache=request.timing_cache,
        preprocess=preprocess_for(request.info.metadata),
        engine_bytes=int(plan.nbytes),
        seconds={"parse": parsed_at - started, "build": built_at - parsed_at, "total": time.perf_counter() - started},
    )
    _write(report, plan, cache)
    return report


def _parse(parser: Any, network: Any, request: BuildRequest) -> tuple[tuple[TensorSpec, ...], ...]:
    """Parse the ONNX file into ``network`` with ``parser``; its inputs and outputs.

    Raises:
        EngineError: every parser error, with node and op.
    """
    parsed = parser.parse_from_file(str(request.info.path))
    if not parsed or parser.num_errors:
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        raise EngineError(_parse_failure(request.info, errors, request.plugins))
    inputs = tuple(_tensor_spec(network.get_input(i)) for i in range(network.num_inputs))
    outputs = tuple(_tensor_spec(network.get_output(i)) for i in range(network.num_outputs))
    return inputs, outputs


def _set_limits(
    trt: ModuleType, builder: Any, config: Any, request: BuildRequest, inputs: tuple[TensorSpec, ...]
) -> None:
    """The workspace limit, the plugin libraries to embed and the batch profile."""
    if request.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, request.workspace_mib * MIB)
    if request.serialize_plugins:
        config.plugins_to_serialize = [str(path.resolve()) for path in request.plugins]
    if request.profile is not None:
        _add_profile(builder, config, inputs, request.profile)


def _write(report: BuildReport, plan: Any, cache: Any) -> None:
    """The plan, its sidecar and the updated timing cache, all or none."""
    targets = [report.engine_path, report.sidecar_path] + ([report.timing_cache] if cache is not None else [])
    with atomic_outputs(*targets) as temps:
        temps[0].write_bytes(memoryview(plan))
        temps[1].write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        if cache is not None:
            temps[2].write_bytes(memoryview(cache.serialize()))


def _check_fast_fp16(trt: ModuleType, builder: Any) -> None:
    """Refuse ``fp16`` where it would silently run in fp32 or where this TensorRT has no FP16 builder flag."""
    if not hasattr(trt.BuilderFlag, "FP16"):
        raise ConfigError(
            f"TensorRT {trt.__version__} has no FP16 builder flag (strongly typed networks only): export the ONNX "
            "model in fp16 instead of passing --fp16"
        )
    if not getattr(builder, "platform_has_fast_fp16", True):
        raise ConfigError("--fp16 asked for, but this GPU has no fast fp16; build without --fp16")


def _strongly_typed_flag(trt: ModuleType) -> int | None:
    """The network-creation bit for a strongly typed network, ``None`` where this TensorRT has none (8.x)."""
    member = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    return None if member is None else 1 << int(member)


def _set_precision(trt: ModuleType, config: Any, *, fp16: bool, tf32: bool, int8: bool = False) -> None:
    """fp16 kernels on request; TF32 stays TensorRT's default unless strict fp32 is asked for. ``int8``: a weakly
    typed network with Q/DQ nodes, which TensorRT 10 quantizes explicitly (no calibrator) under the INT8 flag."""
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8 and hasattr(trt.BuilderFlag, "INT8"):
        config.set_flag(trt.BuilderFlag.INT8)
    if not tf32:
        config.clear_flag(trt.BuilderFlag.TF32)


def _parse_failure(info: OnnxInfo, errors: list[Any], plugin_paths: tuple[Path, ...]) -> str:
    """Every parser error on one line, with a hint when plugin nodes met no plugin library."""
    lines = [format_parser_error(error) for error in errors] or ["the parser gave up without an error message"]
    message = f"TensorRT cannot parse {info.path.name} ({len(lines)} error{'s' * (len(lines) > 1)}): " + " | ".join(
        lines
    )
    ops = {error.node_operator() for error in errors}
    if not plugin_paths and ops & plugin_op_types():
        message += " | hint: this is a plugin-flavour ONNX file; pass --plugins libtofu_edge_plugins.so"
    return message


def _tensor_spec(tensor: Any) -> TensorSpec:
    return TensorSpec(tensor.name, tuple(int(d) for d in tensor.shape), dtype_name(tensor.dtype))


def _add_profile(builder: Any, config: Any, inputs: tuple[TensorSpec, ...], profile: BatchProfile) -> None:
    """One optimization profile giving every dynamic-batch input the min/opt/max batch."""
    trt_profile = builder.create_optimization_profile()
    for spec in inputs:
        if any(d < 0 for d in spec.shape[1:]):
            raise ConfigError(f"input {spec.name!r} {list(spec.shape)} has dynamic axes besides the batch")
        if spec.shape and spec.shape[0] < 0:
            trt_profile.set_shape(spec.name, *profile.shapes(spec.shape))
    config.add_optimization_profile(trt_profile)


def _attach_timing_cache(config: Any, path: Path | None) -> Any:
    """Start from the cache in ``path`` (or an empty one) and attach it; ``None`` without a path."""
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise EngineError(f"timing cache {path} does not fit this TensorRT or GPU; delete it and build again")
    return cache
