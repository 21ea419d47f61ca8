"""The plugin flavour: each fusion step as two custom ops that TensorRT maps to our plugins.

`tofu_edge::match` and `tofu_edge::merge` are torch custom ops whose eager kernels are the vectorized
ops; at export they become ``TofuMatch`` / ``TofuMerge`` nodes in domain ``ai.onnx.contrib`` with the
attributes that ``plugin_specs.json`` (shared with the C++ plugins in ``kernels/``) declares. The exporter
runs the fusion steps of its own copy of the model on `plugin_step` (`use_plugin_step`), which calls them.
`register_reference_ops` gives onnxruntime-extensions Python kernels running the loop reference, so the same
file runs on a CPU.
"""

# No `from __future__ import annotations` here: torch.onnx reads the translation functions' annotations
# (`int` marks an ONNX attribute) and does not resolve string annotations.
from functools import cache

import numpy as np
import onnxscript
import torch
from onnx.defs import OpSchema

from tofu_edge.config import StepOp
from tofu_edge.export.plugin_spec import MODE_CODES, PLUGIN_SPECS, plugin_attributes
from tofu_edge.ops.match import TokenMatch, cosine_scores, match_scores
from tofu_edge.ops.merge import fuse_tokens
from tofu_edge.ops.reference import reference_match, reference_merge
from tofu_edge.patch.steps import use_step

__all__ = [
    "plugin_step",
    "use_plugin_step",
    "translation_table",
    "register_reference_ops",
    "enable_reference_ops",
]

_OPS = {code: op for op, code in MODE_CODES.items()}


@torch.library.custom_op("tofu_edge::match", mutates_args=())
def match_op(scores: torch.Tensor, num_tokens: int, num_prefix: int, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``TofuMatch``: the index plan of one step as int32 tensors.

    Shapes:
        scores: [B, |A|, |B|]
        returns: [B, num_tokens] (order), [B, r] (dst_slot)
    """
    match = match_scores(scores, num_tokens, num_prefix, r)
    return match.order.to(torch.int32), match.dst_slot.to(torch.int32)


@match_op.register_fake
def _match_shapes(scores, num_tokens, num_prefix, r):
    batch = scores.shape[0]
    return scores.new_empty(batch, num_tokens, dtype=torch.int32), scores.new_empty(batch, r, dtype=torch.int32)


@torch.library.custom_op("tofu_edge::merge", mutates_args=())
def merge_op(
    x: torch.Tensor, size: torch.Tensor, order: torch.Tensor, dst_slot: torch.Tensor, num_tokens: int, r: int, mode: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``TofuMerge``: prune (0), mean (1) or MLERP (2) by an index plan.

    Shapes:
        x: [B, N, C]
        size: [B, N, 1]
        order: [B, N]
        dst_slot: [B, r]
        returns: [B, N - r, C], [B, N - r, 1]
    """
    match = TokenMatch.from_order(order.long(), dst_slot.long(), r, num_dst=num_tokens - r)  # any kept slot
    return fuse_tokens(x, size, match, _OPS[mode])


@merge_op.register_fake
def _merge_shapes(x, size, order, dst_slot, num_tokens, r, mode):
    batch, channels = x.shape[0], x.shape[2]
    return x.new_empty(batch, num_tokens - r, channels), size.new_empty(batch, num_tokens - r, 1)


def plugin_step(
    x: torch.Tensor, size: torch.Tensor | None, metric: torch.Tensor, num_prefix: int, r: int, op: StepOp
) -> tuple[torch.Tensor, torch.Tensor, TokenMatch]:
    """One fusion step through the two custom ops (the plugin flavour of `match_tokens` + `fuse_tokens`).

    Shapes:
        x: [B, N, C]
        size: [B, N, 1]
        metric: [B, N, Ck]
        returns: [B, N - r, C], [B, N - r, 1], and the match as int64 indices
    """
    num_tokens = x.shape[1]
    order, dst_slot = torch.ops.tofu_edge.match(cosine_scores(metric, num_prefix), num_tokens, num_prefix, r)
    size = torch.ones_like(x[..., :1]) if size is None else size
    x, size = torch.ops.tofu_edge.merge(x, size, order, dst_slot, num_tokens, r, MODE_CODES[op])
    return x, size, TokenMatch.from_order(order.long(), dst_slot.long(), r, num_dst=num_tokens - r)


def use_plugin_step(model: torch.nn.Module) -> torch.nn.Module:
    """Run the fusion steps of a fused ``model`` on `plugin_step` (in place), for the plugin-flavour export.

    Raises:
        ConfigError: ``model`` is not fused.
    """
    return use_step(model, plugin_step)


@cache
def _onnx_op(name: str) -> onnxscript.values.Op:
    """An onnxscript op for plugin ``name`` with a schema built from the spec."""
    spec = PLUGIN_SPECS["plugins"][name]
    float_types = ["tensor(float)", "tensor(float16)"]

    def parameter(p: dict) -> OpSchema.FormalParameter:
        return OpSchema.FormalParameter(p["name"], "tensor(int32)" if p["types"] == ["int32"] else "T")

    attributes = [OpSchema.Attribute(a, OpSchema.AttrType.INT, "") for a in spec["attributes"]]
    attributes += [OpSchema.Attribute(a, OpSchema.AttrType.STRING, "") for a in plugin_attributes(name)]
    schema = OpSchema(
        name,
        PLUGIN_SPECS["domain"],
        1,
        spec["summary"],
        inputs=[parameter(p) for p in spec["inputs"]],
        outputs=[parameter(p) for p in spec["outputs"]],
        type_constraints=[("T", float_types, "float tensors")],
        attributes=attributes,
    )
    return onnxscript.values.Op(onnxscript.values.Opset(PLUGIN_SPECS["domain"], 1), name, op_schema=schema)


def _match_onnx(scores, num_tokens: int, num_prefix: int, r: int):
    return _onnx_op("TofuMatch")(
        scores, num_tokens=num_tokens, num_prefix=num_prefix, r=r, **plugin_attributes("TofuMatch")
    )


def _merge_onnx(x, size, order, dst_slot, num_tokens: int, r: int, mode: int):
    return _onnx_op("TofuMerge")(
        x, size, order, dst_slot, num_tokens=num_tokens, r=r, mode=mode, **plugin_attributes("TofuMerge")
    )


def translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export``: our custom ops to plugin nodes."""
    return {torch.ops.tofu_edge.match.default: _match_onnx, torch.ops.tofu_edge.merge.default: _merge_onnx}


@cache
def register_reference_ops() -> None:
    """Register ``TofuMatch``/``TofuMerge`` with onnxruntime-extensions as Python ops running the loop reference.

    Use with ``SessionOptions.register_custom_ops_library(onnxruntime_extensions.get_library_path())``.
    """
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    ints = {name: PyCustomOpDef.dt_int64 for name in ("num_tokens", "num_prefix", "r", "mode")}
    strings = {name: PyCustomOpDef.dt_string for name in ("plugin_version", "plugin_namespace")}
    f32, i32 = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32

    @onnx_op(
        op_type="TofuMatch",
        inputs=[f32],
        outputs=[i32, i32],
        attrs={**{k: ints[k] for k in ("num_tokens", "num_prefix", "r")}, **strings},
    )
    def tofu_match(scores, num_tokens, num_prefix, r, **_):
        plans = [reference_match(s.tolist(), num_tokens, num_prefix, r) for s in scores]
        return np.array([p[0] for p in plans], np.int32), np.array([p[1] for p in plans], np.int32).reshape(-1, r)

    @onnx_op(
        op_type="TofuMerge",
        inputs=[f32, f32, i32, i32],
        outputs=[f32, f32],
        attrs={**{k: ints[k] for k in ("num_tokens", "r", "mode")}, **strings},
    )
    def tofu_merge(x, size, order, dst_slot, num_tokens, r, mode, **_):
        outs = [
            reference_merge(
                torch.from_numpy(x[b]),
                torch.from_numpy(size[b, :, 0]),
                order[b].tolist(),
                dst_slot[b].tolist(),
                r,
                _OPS[mode],
            )
            for b in range(x.shape[0])
        ]
        return np.stack([o[0].numpy() for o in outs]), np.stack([o[1].numpy() for o in outs])[..., None]


def enable_reference_ops(options) -> None:
    """Let an onnxruntime session with ``options`` run plugin-flavour files: registers the reference Python ops
    and loads onnxruntime-extensions into ``options`` (an ``onnxruntime.SessionOptions``)."""
    from onnxruntime_extensions import get_library_path

    register_reference_ops()
    options.register_custom_ops_library(get_library_path())
