"""Stand-ins for the run side: TensorRT's runtime, engine and execution context, and cuda-python's runtime API.

"Device" memory is host memory here (ctypes buffers), copies are ``memmove``, and CUDA events read a fake clock
that advances 0.25 ms per recorded event, so `EngineRunner`'s plumbing (buffers, shapes, profiles, copies, event
timing, clean-up) runs on a machine without a GPU. The stand-in engine "computes" ``out[b, k] = in[b].flat[k]``.
A stand-in plan is ``stub-engine:`` followed by JSON (see `stub_plan`).
"""

from __future__ import annotations

import ctypes
import enum
import json
import types

import numpy as np

__all__ = ["stub_plan", "add_stub_runtime", "make_stub_cudart"]

PLAN_HEADER = b"stub-engine:"
EVENT_TICK_MS = 0.25


def stub_plan(input_shape, classes, profile=None, name_in="images", name_out="logits") -> bytes:
    """A plan the stand-in runtime deserializes: one float32 input, one float32 ``[B, classes]`` output."""
    spec = {"input": [name_in, list(input_shape)], "output": [name_out, classes], "profile": profile}
    return PLAN_HEADER + json.dumps(spec).encode()


def add_stub_runtime(trt: types.ModuleType, cudart: types.ModuleType) -> types.ModuleType:
    """Give the stand-in ``tensorrt`` module a ``Runtime`` whose contexts read and write ``cudart``'s memory."""
    trt.TensorIOMode = enum.Enum("TensorIOMode", "INPUT OUTPUT")

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            low, _, high = self.engine.get_tensor_profile_shape(name, 0) if self.engine.profile else ([0], 0, [1 << 30])
            if not low[0] <= shape[0] <= high[0]:
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            batch = self.shapes.get(self.engine.name_in, self.engine.shape_in)[0]
            return (
                self.shapes.get(name, self.engine.shape_in)
                if name == self.engine.name_in
                else (batch, self.engine.classes)
            )

        def set_tensor_address(self, name, address):
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream):
            shape_in = self.get_tensor_shape(self.engine.name_in)
            shape_out = self.get_tensor_shape(self.engine.name_out)
            images = cudart.view(self.addresses[self.engine.name_in], shape_in)
            cudart.view(self.addresses[self.engine.name_out], shape_out)[:] = images.reshape(shape_in[0], -1)[
                :, : shape_out[1]
            ]
            cudart.executions += 1
            return True

    class Engine:
        def __init__(self, spec):
            (self.name_in, shape), (self.name_out, self.classes) = spec["input"], spec["output"]
            self.profile, self.shape_in = spec["profile"], tuple(shape)

        num_io_tensors = 2

        def get_tensor_name(self, index):
            return (self.name_in, self.name_out)[index]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == self.name_in else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return self.shape_in if name == self.name_in else (self.shape_in[0], self.classes)

        def get_tensor_dtype(self, name):
            return trt.DataType.FLOAT

        def get_tensor_profile_shape(self, name, index):
            return [[size, *self.shape_in[1:]] for size in self.profile]

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        engine_host_code_allowed = False

        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, plan):
            if not plan.startswith(PLAN_HEADER):
                self.logger.log(trt.ILogger.Severity.ERROR, "stub: the magic tag does not match")
                return None
            return Engine(json.loads(plan[len(PLAN_HEADER) :]))

    class Logger(trt.ILogger):
        """``trt.Logger``: the built-in logger the standalone app creates (it keeps nothing)."""

        WARNING = trt.ILogger.Severity.WARNING

        def __init__(self, min_severity=None):
            super().__init__()

        def log(self, severity, msg):
            pass

    trt.Runtime = Runtime
    trt.Logger = Logger
    trt.nptype = lambda dtype: {trt.DataType.FLOAT: np.float32}[dtype]
    return trt


def make_stub_cudart() -> types.ModuleType:
    """A stand-in for ``cuda.bindings.runtime``; ``.allocations`` holds what is not freed yet."""
    rt = types.ModuleType("cudart")
    rt.cudaError_t = enum.Enum("cudaError_t", "cudaSuccess cudaErrorInvalidValue")
    rt.cudaMemcpyKind = enum.Enum("cudaMemcpyKind", "cudaMemcpyHostToDevice cudaMemcpyDeviceToHost")
    rt.allocations, rt.executions, rt.clock = {}, 0, 0.0
    ok = rt.cudaError_t.cudaSuccess

    class Handle(int):
        """Streams and events: ints, as cuda-python's handle types convert to."""

    def allocate(size):
        buffer = (ctypes.c_uint8 * size)()
        rt.allocations[ctypes.addressof(buffer)] = buffer
        return ok, ctypes.addressof(buffer)

    def free(pointer):
        return (ok,) if rt.allocations.pop(int(pointer), None) is not None else (rt.cudaError_t.cudaErrorInvalidValue,)

    def record(event, stream):
        rt.clock += EVENT_TICK_MS
        rt.events[int(event)] = rt.clock
        return (ok,)

    def view(address, shape):
        count = int(np.prod(shape))
        return np.frombuffer((ctypes.c_float * count).from_address(address), np.float32).reshape(shape)

    handles = iter(range(1, 1 << 30))
    rt.events = {}
    rt.view = view
    rt.cudaGetDeviceCount = lambda: (ok, 1)
    rt.cudaSetDevice = lambda device: (ok,)
    rt.cudaGetErrorName = lambda status: (ok, status.name.encode())
    rt.cudaMalloc = rt.cudaMallocHost = allocate
    rt.cudaFree = rt.cudaFreeHost = free
    rt.cudaStreamCreate = rt.cudaEventCreate = lambda: (ok, Handle(next(handles)))
    rt.cudaStreamDestroy = rt.cudaEventDestroy = lambda handle: (ok,)
    rt.cudaEventRecord = record
    rt.cudaEventSynchronize = lambda event: (ok,)
    rt.cudaEventElapsedTime = lambda start, stop: (ok, rt.events[int(stop)] - rt.events[int(start)])
    rt.cudaMemcpyAsync = lambda dst, src, count, kind, stream: (ctypes.memmove(dst, src, count), ok)[1:]
    return rt
