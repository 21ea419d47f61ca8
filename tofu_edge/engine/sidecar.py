"""What an engine build needs to know before TensorRT is touched, and the JSON written beside the engine.

Everything here runs without TensorRT: reading the ONNX file's inputs, outputs and ``tofu_edge.*`` metadata,
resolving the batch profile, and composing and reading the sidecar.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from tofu_edge.engine.backend import EngineError
from tofu_edge.engine.preprocess import PreprocessConfig
from tofu_edge.errors import ConfigError, InputShapeError
from tofu_edge.export.external_data import external_data_problem
from tofu_edge.export.metadata import MetadataKey, unprefixed

__all__ = [
    "SIDECAR_SUFFIX",
    "TensorSpec",
    "BatchProfile",
    "OnnxInfo",
    "inspect_onnx",
    "onnx_precision",
    "resolve_profile",
    "preprocess_for",
    "sidecar_path",
    "read_sidecar",
    "check_input_shape",
]

_log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"
_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.BOOL: "bool",
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a network or engine; ``-1`` marks a dynamic axis."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class BatchProfile:
    """The optimization profile of a dynamic batch axis: the engine accepts ``min <= batch <= max``, tuned for ``opt``.

    Raises:
        ConfigError: the sizes are not ``1 <= min <= opt <= max``.
    """

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ConfigError(
                f"batch profile must satisfy 1 <= min <= opt <= max, got min={self.min} opt={self.opt} max={self.max}"
            )

    def shapes(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """The (min, opt, max) shapes of an input whose first axis is the batch."""
        return tuple((size, *shape[1:]) for size in (self.min, self.opt, self.max))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


@dataclass(frozen=True)
class OnnxInfo:
    """An ONNX file as the builder will see it, read without TensorRT (weights are not loaded)."""

    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: dict[str, Any]
    sha256: str

    @property
    def dynamic_batch(self) -> bool:
        """Whether any input's first axis is symbolic."""
        return any(spec.shape and spec.shape[0] < 0 for spec in self.inputs)


def inspect_onnx(path: str | Path) -> OnnxInfo:
    """Inputs, outputs and ``tofu_edge.*`` metadata of an ONNX file, checking that it is one.

    Metadata values that are JSON (config, plan, input shape, versions) come back parsed.

    Raises:
        EngineError: the file is missing, cannot be decoded, has no graph inputs or outputs, or its external data
            file is missing or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"ONNX file {path} does not exist" if not path.is_dir() else f"{path} is a folder")
    data = path.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise EngineError(f"{path} is not a valid ONNX file: {error}") from None
    problem = external_data_problem(path, model)
    if problem is not None:
        raise EngineError(problem)
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = tuple(_spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_spec(v) for v in model.graph.output)
    if not inputs or not outputs:
        raise EngineError(f"{path} is not a valid ONNX file: the graph has no {'inputs' if not inputs else 'outputs'}")
    metadata = {key: _maybe_json(value) for key, value in unprefixed(model.metadata_props).items()}
    return OnnxInfo(path, inputs, outputs, metadata, hashlib.sha256(data).hexdigest())


def resolve_profile(
    info: OnnxInfo, min_batch: int | None = None, opt_batch: int | None = None, max_batch: int | None = None
) -> BatchProfile | None:
    """The batch profile for ``info``: ``None`` for a static batch, else min/opt/max with defaults filled in.

    Defaults: ``min`` 1, ``max`` the largest size given (1 if none), ``opt`` the ``max``.

    Raises:
        ConfigError: the sizes are out of order, or batch sizes are asked of a static-batch model that cannot honour
            them.
    """
    given = [size for size in (min_batch, opt_batch, max_batch) if size is not None]
    if not info.dynamic_batch:
        static = {spec.shape[0] for spec in info.inputs if spec.shape}
        if any(size not in static for size in given):
            raise ConfigError(
                f"{info.path.name} has a static batch of {sorted(static)[0]}; --min/--opt/--max-batch need an ONNX "
                "file with a dynamic batch axis (tofu-edge export --dynamic-batch)"
            )
        return None
    if not given:
        _log.warning("%s has a dynamic batch axis and no batch sizes were given: building for batch 1", info.path)
    high = max(given, default=1)
    maximum = max_batch if max_batch is not None else high
    return BatchProfile(
        min=min_batch if min_batch is not None else 1,
        opt=opt_batch if opt_batch is not None else maximum,
        max=maximum,
    )


def preprocess_for(metadata: dict[str, Any]) -> PreprocessConfig:
    """The preprocessing an engine's images need, from the ONNX metadata.

    In order: a ``tofu_edge.preprocess`` entry (``mean``, ``std``, ``crop_pct``, ``interpolation``); timm's
    pretrained config of the ``tofu_edge.model`` name, when timm is installed and knows it; the ImageNet default.
    """
    if isinstance(metadata.get(MetadataKey.PREPROCESS), dict):
        return PreprocessConfig.from_dict({"source": "ONNX metadata", **metadata[MetadataKey.PREPROCESS]})
    model = metadata.get(MetadataKey.MODEL)
    if isinstance(model, str):
        try:
            import timm
        except ImportError:
            return PreprocessConfig()
        cfg = timm.get_pretrained_cfg(model)
        if cfg is not None and cfg.mean and cfg.std:
            return PreprocessConfig(
                mean=tuple(cfg.mean),
                std=tuple(cfg.std),
                crop_pct=float(cfg.crop_pct or PreprocessConfig.crop_pct),
                interpolation=cfg.interpolation or "bicubic",
                source=f"timm pretrained config of {model}",
            )
    return PreprocessConfig()


def sidecar_path(engine_path: str | Path) -> Path:
    """Where an engine's JSON sidecar lives: ``model.engine`` -> ``model.engine.json``.

    The engine's file name is kept whole so the sidecar never replaces the ``model.json`` report that
    ``tofu-edge export`` writes beside ``model.onnx``.
    """
    path = Path(engine_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_sidecar(engine_path: str | Path) -> dict[str, Any] | None:
    """The sidecar of an engine, or ``None`` when there is none (an engine built by ``trtexec``).

    Raises:
        EngineError: the sidecar exists but is not valid JSON.
    """
    path = sidecar_path(engine_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EngineError(f"sidecar {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise EngineError(f"sidecar {path} is not a JSON object")
    return data


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
    return TensorSpec(
        value.name, shape, _ONNX_DTYPES.get(tensor.elem_type, onnx.TensorProto.DataType.Name(tensor.elem_type).lower())
    )


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def check_input_shape(spec: TensorSpec, shape: tuple[int, ...], profile: BatchProfile | None) -> None:
    """Check that an array of ``shape`` fits the engine input ``spec`` (and the batch profile of a dynamic batch).

    Raises:
        InputShapeError: rank, a static axis, or the batch (outside ``profile``) does not fit; the message names the
            input and both shapes.
    """
    expected = list(spec.shape)
    if len(shape) != len(spec.shape):
        raise InputShapeError(f"input {spec.name!r}: got shape {list(shape)}, the engine takes {expected}")
    for axis, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
        if want >= 0 and want != got:
            raise InputShapeError(f"input {spec.name!r}: got shape {list(shape)}, the engine takes {expected}")
        if want < 0 and axis == 0 and profile is not None and not profile.min <= got <= profile.max:
            raise InputShapeError(
                f"input {spec.name!r}: batch {got} is outside the engine's profile [{profile.min}, {profile.max}]"
            )


def onnx_precision(metadata: dict) -> str:
    """``int8`` for a file the INT8 exporter wrote (its ``tofu_edge.int8`` entry in ``metadata`` as `inspect_onnx`
    reads it, prefix removed), else ``fp32``."""
    return "int8" if metadata.get(MetadataKey.INT8) else "fp32"
