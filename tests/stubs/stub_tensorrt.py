"""A stand-in for the subset of the TensorRT 10 Python API that `build_engine` calls, for machines without TensorRT.

It records what the builder was asked to do (flags, pool limits, profiles, plugins, timing cache) so tests can check
the orchestration; it does not imitate TensorRT's optimizer. The parser reads the ONNX graph's inputs and outputs with
``onnx`` and reports one ``UNSUPPORTED_NODE`` error per node of a custom domain whose op no loaded plugin library
registers, as TensorRT's parser does for a plugin-flavour graph without the library. A "plugin library" here is a
text file ``stub-plugins: NameA,NameB``.
"""

from __future__ import annotations

import enum
import json
import types
from dataclasses import dataclass, field

import onnx

__all__ = ["make_stub_tensorrt", "PLUGIN_HEADER", "StubParserError", "HostMemory"]

PLUGIN_HEADER = b"stub-plugins: "
STANDARD_DOMAINS = ("", "ai.onnx")


class HostMemory(bytes):
    """``trt.IHostMemory``: a buffer with ``nbytes``."""

    @property
    def nbytes(self) -> int:
        return len(self)


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: object


@dataclass
class StubParserError:
    index: int
    name: str
    op: str

    def code(self):
        return "ErrorCode.UNSUPPORTED_NODE"

    def desc(self):
        return f"No importer registered for op: {self.op}"

    def node(self):
        return self.index

    def node_name(self):
        return self.name

    def node_operator(self):
        return self.op

    def func(self):
        return "importFallbackPluginImporter"

    def file(self):
        return "onnxOpImporters.cpp"

    def line(self):
        return 6212


@dataclass
class _TimingCache:
    data: bytes

    def serialize(self):
        return HostMemory(self.data + b"+timings")


@dataclass
class _Profile:
    shapes: dict = field(default_factory=dict)

    def set_shape(self, name, low, opt, high):
        self.shapes[name] = (tuple(low), tuple(opt), tuple(high))


@dataclass
class _Config:
    flags: set = field(default_factory=set)
    pool_limits: dict = field(default_factory=dict)
    profiles: list = field(default_factory=list)
    plugins_to_serialize: list = field(default_factory=list)
    timing_cache: _TimingCache | None = None

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def set_memory_pool_limit(self, pool, size):
        self.pool_limits[pool] = size

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data):
        return _TimingCache(bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing_cache = cache
        return True


def make_stub_tensorrt(*, fast_fp16: bool = True, fail_build: bool = False) -> types.ModuleType:
    """A fresh module object standing in for ``tensorrt``; ``module.calls`` records each build's config."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.99.0-stub"
    trt.calls = []
    trt.registered = set()
    trt.DataType = enum.Enum("DataType", "FLOAT HALF INT32 INT64 BOOL")
    trt.BuilderFlag = enum.Enum("BuilderFlag", "FP16 TF32")
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
    onnx_dtypes = {onnx.TensorProto.FLOAT: trt.DataType.FLOAT, onnx.TensorProto.FLOAT16: trt.DataType.HALF}

    class ILogger:
        Severity = enum.IntEnum("Severity", "INTERNAL_ERROR ERROR WARNING INFO VERBOSE")

        def __init__(self):
            pass

    class Registry:
        def load_library(self, path):
            with open(path, "rb") as handle:
                data = handle.read()
            if not data.startswith(PLUGIN_HEADER):
                return None
            trt.registered.update(data[len(PLUGIN_HEADER) :].decode().strip().split(","))
            return object()

    registry = Registry()

    class Network:
        def __init__(self):
            self.inputs, self.outputs = [], []

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))

        def get_input(self, index):
            return self.inputs[index]

        def get_output(self, index):
            return self.outputs[index]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse_from_file(self, path):
            model = onnx.load(path)
            initializers = {t.name for t in model.graph.initializer}
            for values, target in (
                (model.graph.input, self.network.inputs),
                (model.graph.output, self.network.outputs),
            ):
                for value in values:
                    if value.name in initializers:
                        continue
                    dims = value.type.tensor_type.shape.dim
                    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
                    target.append(_Tensor(value.name, shape, onnx_dtypes[value.type.tensor_type.elem_type]))
            for index, node in enumerate(model.graph.node):
                if node.domain not in STANDARD_DOMAINS and node.op_type not in trt.registered:
                    self.errors.append(StubParserError(index, node.name, node.op_type))
            return not self.errors

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, index):
            return self.errors[index]

    class Builder:
        platform_has_fast_fp16 = fast_fp16

        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return _Config(flags={trt.BuilderFlag.TF32})  # TensorRT's default

        def create_optimization_profile(self):
            return _Profile()

        def build_serialized_network(self, network, config):
            record = {
                "flags": sorted(flag.name for flag in config.flags),
                "pool_limits": {pool.name: size for pool, size in config.pool_limits.items()},
                "profiles": [profile.shapes for profile in config.profiles],
                "plugins_to_serialize": list(config.plugins_to_serialize),
                "timing_cache": config.timing_cache.data if config.timing_cache else None,
            }
            trt.calls.append(record)
            if fail_build:
                self.logger.log(ILogger.Severity.ERROR, "stub: out of workspace")
                return None
            return HostMemory(b"stub-plan:" + json.dumps(record["flags"]).encode())

    trt.ILogger = ILogger
    trt.Builder = Builder
    trt.OnnxParser = OnnxParser
    trt.get_plugin_registry = lambda: registry
    return trt
