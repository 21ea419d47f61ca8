"""One-node (or Match -> Merge) ONNX graphs of the plugin ops, and onnxruntime sessions that run them through
libtofu_edge_ort.so. Needs onnx, onnxruntime, numpy and torch-free parts of tofu_edge only, so that the
sanitizer run (ort_exercise.py, a process with the sanitizer runtimes preloaded) can use it too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from tofu_edge.export.plugin_spec import PLUGIN_SPECS, plugin_attributes

DOMAIN = PLUGIN_SPECS["domain"]
MODE_CODES: dict[str, int] = PLUGIN_SPECS["plugins"]["TofuMerge"]["modes"]
FLOAT_TYPES = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}


def match_node(num_tokens: int, num_prefix: int, r: int, **overrides) -> onnx.NodeProto:
    """A TofuMatch node; ``overrides`` replace attributes (None drops one)."""
    attributes = {"num_tokens": num_tokens, "num_prefix": num_prefix, "r": r, **plugin_attributes("TofuMatch")}
    attributes = {k: v for k, v in {**attributes, **overrides}.items() if v is not None}
    return helper.make_node("TofuMatch", ["scores"], ["order", "dst_slot"], name="match_0", domain=DOMAIN, **attributes)


def merge_node(num_tokens: int, r: int, mode: int, **overrides) -> onnx.NodeProto:
    """A TofuMerge node; ``overrides`` replace attributes (None drops one)."""
    attributes = {"num_tokens": num_tokens, "r": r, "mode": mode, **plugin_attributes("TofuMerge")}
    attributes = {k: v for k, v in {**attributes, **overrides}.items() if v is not None}
    return helper.make_node(
        "TofuMerge",
        ["x", "size", "order", "dst_slot"],
        ["x_out", "size_out"],
        name="merge_0",
        domain=DOMAIN,
        **attributes,
    )


def _value(name: str, elem_type: int, rank: int | None) -> onnx.ValueInfoProto:
    """A graph input or output of symbolic extents, or of unknown rank (None): onnxruntime checks a declared
    rank itself, before the op sees the tensor."""
    shape = None if rank is None else [f"{name}_{i}" for i in range(rank)]
    return helper.make_tensor_value_info(name, elem_type, shape)


def _model(nodes: list[onnx.NodeProto], inputs: list, outputs: list) -> bytes:
    graph = helper.make_graph(nodes, "tofu_ort_test", inputs, outputs)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8).SerializeToString()


def match_model(node: onnx.NodeProto, dtype=np.float32, ranked: bool = True) -> bytes:
    """scores [B, |A|, |B|] -> order, dst_slot (extents symbolic, so that the op checks them)."""
    inputs = [_value("scores", FLOAT_TYPES[dtype], 3 if ranked else None)]
    outputs = [_value("order", TensorProto.INT32, 2), _value("dst_slot", TensorProto.INT32, 2)]
    return _model([node], inputs, outputs)


def merge_model(node: onnx.NodeProto, dtype=np.float32, size_dtype=None, ranked: bool = True) -> bytes:
    """x, size, order, dst_slot -> x_out, size_out."""
    size_type = FLOAT_TYPES[size_dtype or dtype]
    inputs = [
        _value("x", FLOAT_TYPES[dtype], 3 if ranked else None),
        _value("size", size_type, 3 if ranked else None),
        _value("order", TensorProto.INT32, 2 if ranked else None),
        _value("dst_slot", TensorProto.INT32, 2 if ranked else None),
    ]
    outputs = [_value("x_out", FLOAT_TYPES[dtype], 3), _value("size_out", size_type, 3)]
    return _model([node], inputs, outputs)


def chain_model(num_tokens: int, num_prefix: int, r: int, mode: int, dtype=np.float32) -> bytes:
    """scores, x, size -> order, dst_slot, x_out, size_out: one fusion step, TofuMatch feeding TofuMerge."""
    float_type = FLOAT_TYPES[dtype]
    inputs = [_value("scores", float_type, 3), _value("x", float_type, 3), _value("size", float_type, 3)]
    outputs = [
        _value("order", TensorProto.INT32, 2),
        _value("dst_slot", TensorProto.INT32, 2),
        _value("x_out", float_type, 3),
        _value("size_out", float_type, 3),
    ]
    return _model([match_node(num_tokens, num_prefix, r), merge_node(num_tokens, r, mode)], inputs, outputs)


def session(library: Path | str, model: bytes, threads: int = 1, arena: bool = True) -> ort.InferenceSession:
    """A CPU session of ``model`` with libtofu_edge_ort registered and ``threads`` intra-op threads. Without the
    ``arena``, every tensor onnxruntime allocates is its own malloc, so AddressSanitizer sees its bounds."""
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.register_custom_ops_library(str(library))
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
