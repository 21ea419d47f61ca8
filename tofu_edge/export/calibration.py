"""The INT8 step of `export_onnx`: calibration images, onnxruntime's quantizer on the fused graph, and the INT8 report.

Calibration images get timm's evaluation preprocessing for the model and are fed through onnxruntime's
``CalibrationDataReader``; by default they are the ImageNet photos bundled with ``foolbox`` that the parity check
does not use. The INT8 model is compared with the float fused model (judged) and with the unfused float model
(reported) on the parity image sets.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader

from tofu_edge.errors import ConfigError
from tofu_edge.export.graph import check_plugin_graph, check_portable, set_metadata
from tofu_edge.export.parity import ParityReport, ParityTolerance, SetParity, compare_outputs
from tofu_edge.export.quantize import (
    INT8_METADATA_KEY,
    Int8Config,
    check_quantized,
    linear_nodes,
    quantize_graph,
)
from tofu_edge.export.session import ort_session
from tofu_edge.images import IMAGE_SUFFIXES, bundled_photo_folder, data_config, load_image

__all__ = ["INT8_TOLERANCE", "Calibration", "Int8Report", "calibration_images", "linear_weights", "quantize_export"]

# INT8 against the float fused model, per image set: loose enough for random-weight models, whose 1000 logits nearly
# tie (DeiT-S r=13, symmetric Q/DQ: cosine 0.986 on random inputs), tight enough to catch a broken quantization
INT8_TOLERANCE = ParityTolerance(min_cosine=0.98, min_top1_agreement=0.5)
CALIBRATION_SEED = 0
DYNAMIC_CALIBRATION_BATCH = 8  # images per calibration call when the batch axis is dynamic

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Calibration:
    """The images that set the activation ranges: files or preprocessed arrays, and where they came from."""

    source: str
    files: tuple[Path, ...] = ()
    arrays: np.ndarray | None = field(default=None, compare=False, repr=False)
    asked: int = 0

    @property
    def count(self) -> int:
        return len(self.files) if self.arrays is None else len(self.arrays)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "images": self.count, "asked": self.asked, "method": "minmax"}


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


def calibration_images(config: Int8Config, module: torch.nn.Module, bundled_skip: int) -> Calibration | None:
    """The calibration set of ``config`` for ``module`` (checked before any slow work), ``None`` if not calibrated.

    Args:
        config: The INT8 config.
        module: The model (its input shape and preprocessing).
        bundled_skip: How many of the bundled photos (sorted) the parity check uses; calibration skips them.

    Raises:
        ConfigError: the folder is missing or has no images, arrays of the wrong shape, or no default images.
    """
    if not config.recipe.calibrated:
        return None
    shape = (module.patch_embed.proj.in_channels, *module.patch_embed.img_size)
    if config.calibration_data is not None:
        arrays = np.asarray(config.calibration_data, dtype=np.float32)
        if tuple(arrays.shape[1:]) != shape or len(arrays) == 0:
            raise ConfigError(f"calibration data must be [N, {', '.join(map(str, shape))}], got {list(arrays.shape)}")
        chosen = _draw(list(range(len(arrays))), config.count)
        return Calibration("arrays", arrays=arrays[chosen], asked=config.count)
    if config.calibration_images is not None:
        folder = config.calibration_images
        if not folder.is_dir():
            raise ConfigError(f"calibration folder {folder} does not exist; give a folder of images")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise ConfigError(f"calibration folder {folder} has no {'/'.join(IMAGE_SUFFIXES)} files")
        return Calibration(str(folder), files=tuple(_draw(files, config.count)), asked=config.count)
    bundled = bundled_photo_folder()
    if bundled is None:
        raise ConfigError("INT8 calibration needs images: pass --calibration-images DIR (or pip install foolbox)")
    files = sorted(bundled.glob("imagenet_*"))[bundled_skip:]
    source = f"foolbox's ImageNet photos ({len(files)} not used by the parity check)"
    return Calibration(source, files=tuple(_draw(files, config.count)), asked=config.count)


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


class CalibrationReader(CalibrationDataReader):
    """Feeds the calibration images to onnxruntime's calibrator in the graph's batch, loading files lazily.

    Shapes:
        each batch: [batch, C, H, W] float32 (a short last batch is padded by repeating its last image)
    """

    def __init__(
        self,
        calibration: Calibration,
        module: torch.nn.Module,
        model: onnx.ModelProto,
        batch: int | None,
        progress: Progress | None = None,
    ) -> None:
        self.calibration = calibration
        self.input_name = model.graph.input[0].name
        self.batch = batch or DYNAMIC_CALIBRATION_BATCH
        self.pad = batch is not None
        self.progress = progress
        self.transform = None
        if calibration.arrays is None:
            from timm.data import create_transform

            self.transform = create_transform(**data_config(module))
        self.rewind()

    def rewind(self) -> None:
        self._batches = self._iterate()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def __len__(self) -> int:
        return -(-self.calibration.count // self.batch)

    def _iterate(self) -> Iterator[dict[str, np.ndarray]]:
        total = self.calibration.count
        for start in range(0, total, self.batch):
            stop = min(start + self.batch, total)
            if self.calibration.arrays is not None:
                images = self.calibration.arrays[start:stop]
            else:
                files = self.calibration.files[start:stop]
                images = torch.stack([load_image(f, self.transform) for f in files]).numpy()
            if self.pad and len(images) < self.batch:
                images = np.concatenate([images, np.repeat(images[-1:], self.batch - len(images), axis=0)])
            if self.progress is not None:
                self.progress(stop, total)
            yield {self.input_name: np.ascontiguousarray(images, dtype=np.float32)}


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


def _draw(items: list, count: int) -> list:
    """A seeded random draw of at most ``count`` items, in their original order."""
    if len(items) <= count:
        return list(items)
    chosen = sorted(random.Random(CALIBRATION_SEED).sample(range(len(items)), count))
    return [items[i] for i in chosen]
