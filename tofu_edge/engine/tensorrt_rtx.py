"""`check_with_tensorrt_rtx`: a CPU-side check that TensorRT's ONNX parser and builder accept a graph.

TensorRT-RTX (``pip install tensorrt-rtx``) runs without a GPU: it parses ONNX and builds a serialized engine
for an explicit compute capability (SM75/80/86/89/120/121; not SM87 or SM90). It cannot load engines or run
plugins, so this is a portability check, not a benchmark. Its ONNX parser is a fork of TensorRT's; one
difference matters here: ops that full TensorRT hands to a built-in plugin (``ScatterElements`` with a
reduction) are rejected, which is also what the portable graph must avoid.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tofu_edge.engine.backend import format_parser_error, recording_logger
from tofu_edge.errors import ConfigError, ExportError, MissingDependencyError

__all__ = ["TensorRTCheck", "check_with_tensorrt_rtx", "tensorrt_rtx_available"]


INSTALL_HINT = "TensorRT-RTX is not installed; run `pip install tensorrt-rtx` (no GPU needed)"


@dataclass(frozen=True)
class TensorRTCheck:
    """What TensorRT-RTX made of one ONNX file.

    Attributes:
        onnx_path: The file that was checked.
        compute_capability: The build target, e.g. ``"SM89"``.
        parsed: The ONNX parser accepted every node.
        built: A serialized engine was produced (False when the build was not asked for or failed).
        layers: Number of TensorRT layers in the parsed network.
        engine_bytes: Size of the serialized engine, 0 when none was built.
        errors: Parser errors (with node index, name and op where TensorRT gives them), then builder errors.
        tensorrt_rtx_version: ``tensorrt_rtx.__version__``.
        seconds: Wall-clock time of parse and build (CPU-only work, so a plain clock is right).
    """

    onnx_path: Path
    compute_capability: str
    parsed: bool
    built: bool
    layers: int
    engine_bytes: int
    errors: tuple[str, ...]
    tensorrt_rtx_version: str
    seconds: float

    @property
    def ok(self) -> bool:
        """The graph parsed and, if a build was asked for, built, with no error reported."""
        return self.parsed and not self.errors

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings, errors as a list)."""
        data = asdict(self)
        data["onnx_path"] = str(self.onnx_path)
        data["errors"] = list(self.errors)
        data["ok"] = self.ok
        return data


def tensorrt_rtx_available() -> bool:
    """Whether ``tensorrt_rtx`` imports (its native libraries included)."""
    try:
        import tensorrt_rtx  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def check_with_tensorrt_rtx(
    onnx_path: str | Path, *, build: bool = True, compute_capability: str = "SM89"
) -> TensorRTCheck:
    """Parse an ONNX file with TensorRT-RTX and, optionally, build a serialized engine for one GPU target.

    Parser and builder errors are returned in ``errors``, not raised; the engine itself is discarded.

    Args:
        onnx_path: The ONNX file (external data, if any, next to it).
        build: Also build a serialized engine (catches ops the parser accepts but the builder cannot compile).
        compute_capability: The target, a ``tensorrt_rtx.ComputeCapability`` name such as ``"SM80"`` or
            ``"SM89"`` (case-insensitive). ``"CURRENT"`` needs a GPU.

    Returns:
        The check's result; ``result.ok`` says whether TensorRT accepted the graph.

    Raises:
        ExportError: ``onnx_path`` is not a file.
        MissingDependencyError: ``tensorrt_rtx`` is not installed.
        ConfigError: ``compute_capability`` is not a target TensorRT-RTX knows.
    """
    path = Path(onnx_path)
    if not path.is_file():
        raise ExportError(f"ONNX file not found: {path}")
    try:
        import tensorrt_rtx as trt
    except (ImportError, OSError) as err:
        raise MissingDependencyError(f"{INSTALL_HINT} ({err})") from err
    target = _target(trt, compute_capability)

    start = time.perf_counter()
    logger = recording_logger(trt)
    builder = trt.Builder(logger)
    # Strong typing: precision comes from the graph (RTX has no FP16 builder flag); required from TensorRT 11.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    parsed = bool(parser.parse_from_file(str(path)))
    errors = [format_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
    parsed = parsed and not errors

    engine_bytes = 0
    if build and parsed:
        config = builder.create_builder_config()
        config.num_compute_capabilities = 1
        config.set_compute_capability(target, 0)
        _add_unit_profile(builder, network, config)
        logger.errors.clear()  # the parser logged its errors already; keep only the builder's
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            errors.extend(logger.errors or ["build_serialized_network returned no engine (no error was logged)"])
        else:
            engine_bytes = int(engine.nbytes)
    return TensorRTCheck(
        onnx_path=path,
        compute_capability=target.name,
        parsed=parsed,
        built=engine_bytes > 0,
        layers=int(network.num_layers),
        engine_bytes=engine_bytes,
        errors=tuple(errors),
        tensorrt_rtx_version=str(trt.__version__),
        seconds=time.perf_counter() - start,
    )


def _target(trt: Any, compute_capability: str) -> Any:
    """The ``ComputeCapability`` member named ``compute_capability``, or a ConfigError listing the choices."""
    members = {name: value for name, value in trt.ComputeCapability.__members__.items() if name != "NONE"}
    target = members.get(compute_capability.strip().upper())
    if target is None:
        raise ConfigError(
            f"unknown TensorRT-RTX compute capability {compute_capability!r}; choose one of {', '.join(members)}"
        )
    return target


def _add_unit_profile(builder: Any, network: Any, config: Any) -> None:
    """Give dynamic axes (a ``dynamic_batch`` export) the size 1, which the builder needs a profile for."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [tensor for tensor in inputs if any(dim < 0 for dim in tensor.shape)]
    if not dynamic:
        return
    profile = builder.create_optimization_profile()
    for tensor in dynamic:
        shape = tuple(1 if dim < 0 else dim for dim in tensor.shape)
        profile.set_shape(tensor.name, shape, shape, shape)
    config.add_optimization_profile(profile)
