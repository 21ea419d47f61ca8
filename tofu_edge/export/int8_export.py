"""The INT8 step of `export_onnx`: onnxruntime's quantizer on the fused graph, its checks, and the INT8 report.

The INT8 model is compared with the float fused model (judged) and with the unfused float model (reported) on the
parity image sets. The calibration images are `tofu_edge.export.calibration`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from tofu_edge.export.calibration import Calibration, CalibrationReader, Progress
from tofu_edge.export.graph import check_plugin_graph, check_portable, set_metadata
from tofu_edge.export.int8_graph import check_quantized, linear_nodes
from tofu_edge.export.parity import ParityReport, ParityTolerance, SetParity, compare_outputs
from tofu_edge.export.quantize import INT8_METADATA_KEY, Int8Config, quantize_graph
from tofu_edge.export.session import ort_session

__all__ = ["INT8_TOLERANCE", "Int8Report", "linear_weights", "quantize_export"]

# INT8 against the float fused model, per image set: loose enough for random-weight models, whose 1000 logits nearly
# tie (DeiT-S r=13, symmetric Q/DQ: cosine 0.986 on random inputs), tight enough to catch a broken quantization
INT8_TOLERANCE = ParityTolerance(min_cosine=0.98, min_top1_agreement=0.5)


@dataclass(frozen=True)
class Int8Report:
    """What the INT8 step did: recipe, quantized layers, calibration, and parity.

    Attributes:
        config: The INT8 config (target and recipe resolved).
        layers: The quantized Linear layers (``blocks.0.attn.qkv``, ...).
        calibration: The calibration images, ``None`` for the dynamic recipe.
        parity: INT8 vs the float fused model (onnxruntime both), judged.
        vs_unfused: INT8 vs the unfused float model (PyTorch), reported.
        fused_vs_unfused: The float fused model (onnxruntime) vs the unfused one, for scale.
        seconds: ``quantize`` (calibration included) and ``parity``.
    """

    config: Int8Config
    layers: tuple[str, ...]
    calibration: Calibration | None
    parity: ParityReport
    vs_unfused: tuple[SetParity, ...]
    fused_vs_unfused: tuple[SetParity, ...]
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.config.to_dict(),
            "quantized_layers": list(self.layers),
            "calibration": self.calibration.to_dict() if self.calibration is not None else None,
            "parity_vs_float_fused": self.parity.to_dict(),
            "vs_unfused_float": [asdict(s) for s in self.vs_unfused],
            "float_fused_vs_unfused_float": [asdict(s) for s in self.fused_vs_unfused],
            "seconds": self.seconds,
        }


def linear_weights(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """The weights ``[out, in]`` of the Linear layers inside the transformer blocks (the head is not one of them)."""
    return {
        f"blocks.{name}": layer.weight.detach().float().numpy()
        for name, layer in module.blocks.named_modules()
        if isinstance(layer, torch.nn.Linear)
    }


def quantize_export(
    float_path: Path,
    output: Path,
    config: Int8Config,
    *,
    module: torch.nn.Module,
    reference: torch.nn.Module,
    image_sets: dict[str, torch.Tensor],
    batch: int | None,
    calibration: Calibration | None,
    scratch: Path,
    tolerance: ParityTolerance,
    portable: onnx.ModelProto | None = None,
    dynamic_batch: bool = False,
    progress: Progress | None = None,
) -> tuple[onnx.ModelProto, Int8Report]:
    """Quantize the fused float graph at ``float_path`` into ``output`` (with its metadata) and compare it.

    Args:
        float_path: The checked float fused graph (portable or plugin flavour), metadata set.
        output: Where the INT8 graph goes.
        config: The INT8 config.
        module: The fused PyTorch model (its Linear weights find the nodes).
        reference: The unfused float model.
        image_sets: The parity image sets.
        batch: The static batch, ``None`` for a dynamic one.
        calibration: From `calibration_images`.
        scratch: A temporary folder for intermediate files.
        tolerance: Judges INT8 vs the float fused model.
        portable: For a plugin-flavour graph, its portable twin: calibration runs there (onnxruntime's calibrator
            cannot load plugin nodes) and its ranges are carried over by layer.
        dynamic_batch: The graph's batch axis is symbolic.
        progress: Called with (calibration images done, total).

    Returns:
        The INT8 graph as written, and the report.

    Raises:
        ExportError: the Linear layers cannot be found, or the quantizer touched a node that must stay float.
    """
    started = time.perf_counter()
    float_model = onnx.load(str(float_path))
    weights = linear_weights(module)
    nodes = linear_nodes(float_model, weights)
    quantized_path = scratch / "int8.onnx"
    reader = None if calibration is None else CalibrationReader(calibration, module, float_model, batch, progress)
    if portable is not None and calibration is not None:
        cache = _plugin_ranges(portable, float_model, config, weights, reader, scratch)
        quantize_graph(float_path, quantized_path, config, list(nodes), cache=cache)
    else:
        quantize_graph(float_path, quantized_path, config, list(nodes), reader=reader)
    quantized = onnx.load(str(quantized_path))
    check_quantized(float_model, quantized, set(nodes), config.recipe)
    plugin = portable is not None or any(n.domain not in ("", "ai.onnx") for n in float_model.graph.node)
    quantized = check_plugin_graph(quantized) if plugin else check_portable(quantized, dynamic_batch)
    quantized_at = time.perf_counter()

    entry = {
        **config.to_dict(),
        "quantized_layers": len(nodes),
        "calibration": calibration.to_dict() if calibration is not None else None,
    }
    set_metadata(
        quantized, {p.key: p.value for p in float_model.metadata_props} | {INT8_METADATA_KEY: json.dumps(entry)}
    )
    onnx.save(quantized, str(output))
    int8_out = _run_sets(ort_session(output), image_sets, batch)
    float_out = _run_sets(ort_session(float_path), image_sets, batch)
    with torch.no_grad():
        unfused_out = {name: reference(images).numpy() for name, images in image_sets.items()}
    report = Int8Report(
        config=config,
        layers=tuple(nodes.values()),
        calibration=calibration,
        parity=ParityReport(tuple(compare_outputs(n, int8_out[n], float_out[n]) for n in image_sets), tolerance),
        vs_unfused=tuple(compare_outputs(n, int8_out[n], unfused_out[n]) for n in image_sets),
        fused_vs_unfused=tuple(compare_outputs(n, float_out[n], unfused_out[n]) for n in image_sets),
        seconds={"quantize": quantized_at - started, "parity": time.perf_counter() - quantized_at},
    )
    return quantized, report


def _plugin_ranges(
    portable: onnx.ModelProto,
    plugin: onnx.ModelProto,
    config: Int8Config,
    weights: dict[str, np.ndarray],
    reader: CalibrationReader,
    scratch: Path,
) -> Path:
    """Calibrate the portable twin and rename its ranges to the plugin graph's tensors, layer by layer."""
    from onnxruntime.quantization import TensorsData, load_tensors_data, save_tensors_data

    portable_path, ranges_path = scratch / "portable.onnx", scratch / "portable_ranges.json"
    onnx.save(portable, str(portable_path))
    portable_nodes = linear_nodes(portable, weights)
    quantize_graph(
        portable_path, scratch / "portable_int8.onnx", config, list(portable_nodes), reader=reader, cache=ranges_path
    )
    ranges = load_tensors_data(ranges_path)
    inputs = {layer: node.input[0] for node in portable.graph.node if (layer := portable_nodes.get(node.name))}
    plugin_nodes = linear_nodes(plugin, weights)
    renamed = {}
    for node in plugin.graph.node:
        if (layer := plugin_nodes.get(node.name)) is not None:
            renamed[node.input[0]] = ranges[inputs[layer]]
    path = scratch / "plugin_ranges.json"
    save_tensors_data(TensorsData(ranges.calibration_method, renamed), path)
    return path


def _run_sets(session: Any, image_sets: dict[str, torch.Tensor], batch: int | None) -> dict[str, np.ndarray]:
    """Outputs of an onnxruntime session on every image set, in chunks of the static batch (padded)."""
    name = session.get_inputs()[0].name
    outputs = {}
    for set_name, images in image_sets.items():
        array = images.numpy().astype(np.float32)
        size = batch or len(array)
        chunks = []
        for start in range(0, len(array), size):
            chunk = array[start : start + size]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)]) if batch else chunk
            chunks.append(session.run(None, {name: padded})[0][: len(chunk)])
        outputs[set_name] = np.concatenate(chunks)
    return outputs
