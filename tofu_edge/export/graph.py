"""Checks and rewrites of an exported ONNX graph: opset, portability, metadata."""

from __future__ import annotations

import re

import onnx

from tofu_edge.errors import ExportError
from tofu_edge.export.plugin_spec import PLUGIN_SPECS, plugin_attributes

__all__ = [
    "SUPPORTED_OPSETS",
    "check_opset",
    "convert_opset",
    "check_portable",
    "check_plugin_graph",
    "set_metadata",
    "op_counts",
]

SUPPORTED_OPSETS = (17, 18)
STANDARD_DOMAINS = ("", "ai.onnx")
# ops whose opset-18 form (axes as an input) has an attribute-only form in opset 17
_REDUCE_OPS = (
    "ReduceMax",
    "ReduceMin",
    "ReduceMean",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
)


def check_opset(opset: int) -> None:
    """Refuse an opset the exporters cannot write, before any slow work.

    Raises:
        ExportError: an opset other than 17 or 18.
    """
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(
            f"opset {opset} is not supported: the fused graph needs LayerNormalization (opset >= 17); "
            f"choose one of {', '.join(map(str, SUPPORTED_OPSETS))}"
        )


def convert_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """The graph at ``opset`` (the exporter writes opset 18).

    Raises:
        ExportError: an opset other than 17 or 18, or a graph that cannot be expressed in it.
    """
    check_opset(opset)
    current = _default_opset(model)
    if current == opset:
        return model
    try:
        converted = onnx.version_converter.convert_version(model, opset)
    except (RuntimeError, onnx.checker.ValidationError) as error:
        raise ExportError(_conversion_message(str(error), current, opset)) from None
    for node in converted.graph.node:
        if node.op_type in _REDUCE_OPS and opset < 18:  # the converter leaves this opset-18 attribute behind
            kept = [a for a in node.attribute if a.name != "noop_with_empty_axes" or a.i != 0]
            del node.attribute[:]
            node.attribute.extend(kept)
    return converted


def check_portable(model: onnx.ModelProto, dynamic_batch: bool) -> onnx.ModelProto:
    """Full ONNX check plus the portable-flavour rules; returns the model with inferred shapes.

    Rules: standard ops only, no ScatterElements/ScatterND with a reduction, every dimension static
    except, with ``dynamic_batch``, one batch dimension per tensor.

    Raises:
        ExportError: naming the rule and the first offending nodes or values.
    """
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ExportError(f"the exported graph fails the ONNX checker: {str(error).strip().splitlines()[0]}") from None
    graph = inferred.graph
    custom = sorted({f"{n.domain}::{n.op_type}" for n in graph.node if n.domain not in STANDARD_DOMAINS})
    if custom:
        raise ExportError(f"the portable graph has non-standard ops: {', '.join(custom)}")
    scatters = [n.name for n in graph.node if n.op_type in ("ScatterElements", "ScatterND") and _reduction(n) != "none"]
    if scatters:
        raise ExportError(f"the portable graph has scatters with a reduction: {', '.join(scatters[:5])}")
    # token counts are Python ints, so with a dynamic batch one symbolic dim per tensor is the batch
    # (or batch x rows in a flat row gather); any other is a leak of dynamic shapes
    allowed = 1 if dynamic_batch else 0
    dynamic = [
        v.name
        for v in (*graph.input, *graph.value_info, *graph.output)
        if sum(not d.HasField("dim_value") for d in v.type.tensor_type.shape.dim) > allowed
    ]
    if dynamic:
        raise ExportError(f"the exported graph has non-static dimensions in: {', '.join(sorted(set(dynamic))[:5])}")
    return inferred


def check_plugin_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX check of the plugin flavour: standard ops plus only our plugin nodes, each with its version and
    namespace, and static graph inputs and outputs.

    Raises:
        ExportError: naming the first problem.
    """
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"the exported graph fails the ONNX checker: {str(error).strip().splitlines()[0]}") from None
    for node in model.graph.node:
        if node.domain in STANDARD_DOMAINS:
            continue
        if node.domain != PLUGIN_SPECS["domain"] or node.op_type not in PLUGIN_SPECS["plugins"]:
            raise ExportError(f"the plugin graph has an unknown custom op {node.domain}::{node.op_type}")
        strings = {a.name: a.s.decode() for a in node.attribute if a.type == onnx.AttributeProto.STRING}
        if any(strings.get(k) != v for k, v in plugin_attributes(node.op_type).items()):
            raise ExportError(f"{node.op_type} node {node.name} lacks plugin_version/plugin_namespace")
    for value in (*model.graph.input, *model.graph.output):
        if not all(d.HasField("dim_value") for d in value.type.tensor_type.shape.dim):
            raise ExportError(f"the plugin graph's {value.name} has a dynamic dimension; export with a static batch")
    return model


def set_metadata(model: onnx.ModelProto, entries: dict[str, str]) -> None:
    """Replace ``metadata_props`` entries of ``model`` with ``entries``."""
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each op type the graph has, most frequent first."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def _default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS)


def _reduction(node: onnx.NodeProto) -> str:
    for attribute in node.attribute:
        if attribute.name == "reduction":
            return attribute.s.decode()
    return "none"


def _conversion_message(error: str, current: int, opset: int) -> str:
    """onnx's converter error (``.../BaseConverter.h:66: adapter_lookup: Assertion `false` failed: No Adapter From
    Version $18 for Split``) in our words: which op, and which opset works."""
    works = f"export with --opset {current}, the opset this graph was traced in"
    missing = re.search(r"No Adapter (?:From|for) Version \$?(\d+) for (\w+)", error)
    if missing:
        op = missing.group(2)
        return (
            f"opset {opset} cannot hold this graph: its {op} nodes have the opset-{missing.group(1)} form and ONNX's "
            f"converter cannot take {op} down to opset {opset}; {works}"
        )
    reason = error.strip().splitlines()[0].rsplit("failed: ", 1)[-1] if error.strip() else "no reason given"
    return f"cannot convert the graph from opset {current} to {opset} ({reason}); {works}"
