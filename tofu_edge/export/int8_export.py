"""INT8 for an exported float file: `quantize_onnx` (onnxruntime's quantizer on the Linear layers, checked, metadata
carried over) and `compare_int8`, the INT8 report of `export_onnx`.

The INT8 model is compared with the float fused model (judged) and with the unfused float model (reported) on the
parity image sets. The calibration images are `tofu_edge.export.calibration`.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from tofu_edge.batches import run_in_batches
from tofu_edge.export.calibration import CalibrationReader, Int8CalibrationSet, Progress, calibration_images
from tofu_edge.export.graph import STANDARD_DOMAINS, check_plugin_graph, check_portable, set_metadata
from tofu_edge.export.int8_graph import check_quantized, linear_nodes
from tofu_edge.export.metadata import MetadataKey, prefixed
from tofu_edge.export.parity import PHOTO_PARITY_IMAGES, ParityReport, ParityTolerance, SetParity, compare_outputs
from tofu_edge.export.quantize import Int8Config, quantize_graph
from tofu_edge.export.session import ort_session

__all__ = ["INT8_TOLERANCE", "Int8Report", "QuantizedOnnx", "compare_int8", "linear_weights", "quantize_onnx"]

# INT8 against the float fused model, per image set: loose enough for random-weight models, whose 1000 logits nearly
# tie (DeiT-S r=13, symmetric Q/DQ: cosine 0.986 on random inputs), tight enough to catch a broken quantization
INT8_TOLERANCE = ParityTolerance(min_cosine=0.98, min_top1_agreement=0.5)


@dataclass(frozen=True)
class QuantizedOnnx:
    """What `quantize_onnx` wrote.

    Attributes:
        model: The INT8 graph as written (weights included).
        layers: The quantized Linear layers (``blocks.0.attn.qkv``, ...), in graph order.
        calibration: The calibration images, ``None`` for the dynamic recipe.
        seconds: How long quantizing took, calibration included.
    """

    model: onnx.ModelProto
    layers: tuple[str, ...]
    calibration: Int8CalibrationSet | None
    seconds: float


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
    calibration: Int8CalibrationSet | None
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


def quantize_onnx(
    source: str | Path,
    output: str | Path,
    config: Int8Config,
    module: torch.nn.Module,
    *,
    calibration: Int8CalibrationSet | None = None,
    portable: onnx.ModelProto | None = None,
    progress: Progress | None = None,
) -> QuantizedOnnx:
    """Quantize the Linear layers of the float ONNX file ``source``, exported from ``module``, into ``output``.

    The Linear nodes are found by ``module``'s weights; everything else stays float, which is checked
    (`check_quantized`), as is the graph (portable rules, or the plugin flavour's). ``output`` keeps ``source``'s
    ``tofu_edge.*`` metadata and gains the ``tofu_edge.int8`` entry. Parity is not checked here (`compare_int8`).

    Args:
        source: A float file from `export_onnx` (portable or plugin flavour, static or dynamic batch).
        output: Where the INT8 file goes (written directly: `export_onnx` passes a temporary path).
        config: The INT8 target and recipe.
        module: The fused PyTorch model the file was exported from.
        calibration: The calibration images (`calibration_images`); ``None`` draws them from ``config``, skipping
            the bundled photos the parity check uses.
        portable: For a plugin-flavour file with a calibrated recipe, its portable twin: calibration runs there
            (onnxruntime's calibrator cannot load plugin nodes) and its ranges are carried over by layer.
        progress: Called with (calibration images done, total).

    Raises:
        ConfigError: the calibration images cannot be found.
        ExportError: the Linear layers cannot be found, or the quantizer touched a node that must stay float.
    """
    started = time.perf_counter()
    source, output = Path(source), Path(output)
    if calibration is None:
        calibration = calibration_images(config, module, PHOTO_PARITY_IMAGES)
    float_model = onnx.load(str(source))
    weights = linear_weights(module)
    nodes = linear_nodes(float_model, weights)
    batch = _static_batch(float_model)
    reader = None if calibration is None else CalibrationReader(calibration, module, float_model, batch, progress)
    with tempfile.TemporaryDirectory(prefix="tofu-edge-int8-") as folder:
        scratch = Path(folder)
        if portable is not None and calibration is not None:
            cache = _plugin_ranges(portable, float_model, config, weights, reader, scratch)
            quantize_graph(source, scratch / "int8.onnx", config, list(nodes), cache=cache)
        else:
            quantize_graph(source, scratch / "int8.onnx", config, list(nodes), reader=reader)
        quantized = onnx.load(str(scratch / "int8.onnx"))
    check_quantized(float_model, quantized, set(nodes), config.recipe)
    plugin = portable is not None or any(n.domain not in STANDARD_DOMAINS for n in float_model.graph.node)
    quantized = check_plugin_graph(quantized) if plugin else check_portable(quantized, batch is None)
    entry = {
        **config.to_dict(),
        "quantized_layers": len(nodes),
        "calibration": calibration.to_dict() if calibration is not None else None,
    }
    kept = {p.key: p.value for p in float_model.metadata_props}
    set_metadata(quantized, kept | prefixed({MetadataKey.INT8: json.dumps(entry)}))
    onnx.save(quantized, str(output))
    return QuantizedOnnx(quantized, tuple(nodes.values()), calibration, time.perf_counter() - started)


def compare_int8(
    quantized: QuantizedOnnx,
    config: Int8Config,
    paths: tuple[Path, Path],
    reference: torch.nn.Module,
    image_sets: dict[str, torch.Tensor],
) -> Int8Report:
    """The INT8 report: the INT8 file against the float fused file (judged by ``config.tolerance``, default
    `INT8_TOLERANCE`) and both against the unfused float model.

    Args:
        quantized: What `quantize_onnx` wrote.
        config: Its INT8 config.
        paths: The INT8 file and the float fused file it was quantized from.
        reference: The unfused float model.
        image_sets: The parity image sets (`parity_image_sets`).

    Shapes:
        image_sets values: [n, C, H, W]
    """
    started = time.perf_counter()
    int8_path, float_path = paths
    batch = _static_batch(quantized.model)
    int8_out = _run_sets(ort_session(int8_path), image_sets, batch)
    float_out = _run_sets(ort_session(float_path), image_sets, batch)
    with torch.no_grad():
        unfused_out = {name: reference(images).numpy() for name, images in image_sets.items()}
    tolerance = config.tolerance or INT8_TOLERANCE
    return Int8Report(
        config=config,
        layers=quantized.layers,
        calibration=quantized.calibration,
        parity=ParityReport(tuple(compare_outputs(n, int8_out[n], float_out[n]) for n in image_sets), tolerance),
        vs_unfused=tuple(compare_outputs(n, int8_out[n], unfused_out[n]) for n in image_sets),
        fused_vs_unfused=tuple(compare_outputs(n, float_out[n], unfused_out[n]) for n in image_sets),
        seconds={"quantize": quantized.seconds, "parity": time.perf_counter() - started},
    )


def _static_batch(model: onnx.ModelProto) -> int | None:
    """The first input's batch size, ``None`` when that axis is symbolic."""
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    return batch.dim_value if batch.HasField("dim_value") else None


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

    def run(chunk: np.ndarray) -> np.ndarray:
        return session.run(None, {name: chunk})[0]

    return {key: run_in_batches(run, images.numpy().astype(np.float32), batch) for key, images in image_sets.items()}
