"""`export_onnx`: a fused timm ViT as a static-shape, portable ONNX file plus a JSON report.

The steps, in order: check the request (`_check_request`), load and fuse the model and gather its image sets
(`prepare_model`), trace and check the float graph (`_float_graph`), judge it against PyTorch (`_float_parity`),
and with ``int8`` quantize that file (`quantize_onnx`) and judge the INT8 model (`compare_int8`).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_ir
import torch

from tofu_edge.choices import Flavor, parse_choice
from tofu_edge.config import FusionConfig
from tofu_edge.errors import ConfigError
from tofu_edge.export.graph import (
    check_opset,
    check_plugin_graph,
    check_portable,
    convert_opset,
    op_counts,
    set_metadata,
)
from tofu_edge.export.int8_export import Int8Report, compare_int8, quantize_onnx
from tofu_edge.export.metadata import MetadataKey, prefixed
from tofu_edge.export.parity import ParityReport, ParityTolerance, check_parity
from tofu_edge.export.plugin import translation_table, use_plugin_step
from tofu_edge.export.prepare import PreparedModel, prepare_model
from tofu_edge.export.quantize import Int8Config, Int8Target
from tofu_edge.export.rewrite import fusable_graph
from tofu_edge.export.session import ort_session
from tofu_edge.export.trace import trace_onnx
from tofu_edge.files import atomic_outputs, check_writable
from tofu_edge.plan import FusionPlan
from tofu_edge.versions import EXPORT_PACKAGES, package_versions

__all__ = ["ExportReport", "export_onnx"]


FOLD_LIMIT = 1 << 24  # elements: constant-fold weight-only subgraphs of any ViT size


@dataclass(frozen=True)
class ExportReport:
    """What `export_onnx` wrote and checked (also saved as JSON beside the ONNX file)."""

    onnx_path: Path
    report_path: Path
    model: str
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    opset: int
    plan: FusionPlan
    flavor: Flavor
    parity: ParityReport
    seconds: dict[str, float]
    ops: dict[str, int]
    int8: Int8Report | None = None
    seed: int | None = None
    weights_sha256: str | None = None

    def to_dict(self) -> dict:
        return {
            "onnx": str(self.onnx_path),
            "model": self.model,
            "input_shape": list(self.input_shape),
            "dynamic_batch": self.dynamic_batch,
            "opset": self.opset,
            "flavor": self.flavor.value,
            "plan": self.plan.to_dict(),
            "gmacs": self.plan.macs / 1e9,
            "unfused_gmacs": self.plan.unfused_macs / 1e9,
            "parity": self.parity.to_dict(),
            "seconds": self.seconds,
            "ops": self.ops,
            "int8": self.int8.to_dict() if self.int8 is not None else None,
            "seed": self.seed,
            "weights_sha256": self.weights_sha256,
            "versions": package_versions(EXPORT_PACKAGES),
        }


def export_onnx(
    model: str | torch.nn.Module,
    output: str | Path,
    config: FusionConfig | None = None,
    *,
    img_size: int | None = None,
    checkpoint: str | Path | None = None,
    pretrained: bool = False,
    batch: int = 1,
    dynamic_batch: bool = False,
    opset: int = 17,
    parity_images: str | Path | None = None,
    tolerance: ParityTolerance | None = None,
    flavor: Flavor | str = Flavor.PORTABLE,
    int8: Int8Config | None = None,
    calibration_progress: Callable[[int, int], None] | None = None,
    seed: int = 0,
) -> ExportReport:
    """Fuse a timm ViT, export it to portable ONNX, check it, and write ``output`` and ``<stem>.json``.

    Parity against the fused PyTorch model is checked on every export, with onnxruntime on random
    inputs, flat single-colour images and photographs (``parity_images``, or the ImageNet samples of
    the ``foolbox`` package when it is installed). Both files are written atomically: a failed export
    leaves nothing behind.

    Args:
        model: A timm model name or a model object (left unchanged: a copy is fused).
        output: The ``.onnx`` path; the report goes to the same stem with ``.json``.
        config: The fusion; ``None`` exports the unfused model (``r=0``).
        img_size: Square input size for a model created by name.
        checkpoint: Weights to load (safetensors or a torch state dict, loaded with ``weights_only``).
        pretrained: timm's hub weights for a model created by name (needs a network).
        batch: Static batch size, or the example batch with ``dynamic_batch``.
        dynamic_batch: Leave the batch axis symbolic.
        opset: 17 (default) or 18.
        parity_images: Folder of photographs for the parity check.
        tolerance: Parity pass criteria of the float graph (with ``int8``, the INT8 model is judged by
            ``int8.tolerance``).
        flavor: ``portable`` (standard ops only) or ``plugin`` (each fusion step as ``TofuMatch`` +
            ``TofuMerge`` nodes for the TensorRT plugins; parity then runs the loop reference as
            onnxruntime-extensions Python ops).
        int8: Quantize the Linear layers for a target (`Int8Config`); the file written is the INT8 model, its
            metadata and report gain an ``int8`` entry. The float model before quantization stays in a temporary
            folder.
        calibration_progress: Called with (calibration images done, total) while a calibrated recipe runs.
        seed: Seed of the random weights of a model created by name (the same seed, the same file); recorded in the
            metadata as ``tofu_edge.seed`` when no weights are loaded, beside the weights' fingerprint
            ``tofu_edge.weights_sha256`` (`tofu_edge.weights`), which every export records.

    Returns:
        The report.

    Raises:
        TofuError: bad input (model, schedule, checkpoint, output path, opset), exit code 2.
        ParityError: parity out of tolerance, exit code 1.
    """
    started = time.perf_counter()
    output, report_path = Path(output), Path(output).with_suffix(".json")
    flavor = _check_request(output, batch, opset, flavor, int8)
    prepared = prepare_model(
        model, config, img_size=img_size, checkpoint=checkpoint, pretrained=pretrained, seed=seed, batch=batch,
        int8=int8, parity_images=parity_images,
    )  # fmt: skip
    static_batch = None if dynamic_batch else batch
    twin = flavor is Flavor.PLUGIN and prepared.calibration is not None  # onnxruntime calibrates the portable twin
    portable = _float_graph(prepared, opset, dynamic_batch, Flavor.PORTABLE) if twin else None
    proto = _float_graph(prepared, opset, dynamic_batch, flavor)
    traced = time.perf_counter()
    set_metadata(proto, _metadata(prepared, dynamic_batch, flavor))
    with atomic_outputs(output, report_path) as (onnx_tmp, report_tmp), _float_file(onnx_tmp, int8) as float_path:
        parity = _float_parity(proto, float_path, prepared, static_batch, tolerance)
        int8_report = None
        if int8 is not None:
            parity.raise_if_failed(f"{output.name}: float graph, onnxruntime vs PyTorch")
            quantized = quantize_onnx(
                float_path, onnx_tmp, int8, prepared.module, calibration=prepared.calibration, portable=portable,
                progress=calibration_progress,
            )  # fmt: skip
            int8_report = compare_int8(quantized, int8, (onnx_tmp, float_path), prepared.reference, prepared.image_sets)
            proto = quantized.model
        report = ExportReport(
            onnx_path=output,
            report_path=report_path,
            model=prepared.name,
            input_shape=tuple(prepared.example.shape),
            dynamic_batch=dynamic_batch,
            opset=opset,
            plan=prepared.module.tofu_plan,
            flavor=flavor,
            parity=parity,
            seconds={"trace": traced - started, "total": time.perf_counter() - started},
            ops=op_counts(proto),
            int8=int8_report,
            seed=prepared.seed,
            weights_sha256=prepared.fingerprint,
        )
        parity.raise_if_failed(f"{output.name}: onnxruntime vs PyTorch")
        if int8_report is not None:
            int8_report.parity.raise_if_failed(f"{output.name}: INT8 vs float fused (onnxruntime)")
        report_tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _check_request(output: Path, batch: int, opset: int, flavor: Flavor | str, int8: Int8Config | None) -> Flavor:
    """Refuse what cannot be exported before any slow work; the flavour.

    Raises:
        ConfigError: a batch below 1, an unknown flavour, or INT8 for onnxruntime on CPUs in the plugin flavour.
        ExportError: an opset other than 17 or 18.
        OutputError: ``output`` cannot be written.
    """
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    flavor = parse_choice(Flavor, flavor, "flavor")
    if int8 is not None and flavor is Flavor.PLUGIN and int8.target is Int8Target.ORT_CPU:
        raise ConfigError(
            "INT8 for onnxruntime on CPUs takes the portable flavour; use --flavor portable, or --int8-target tensorrt "
            "for the plugin flavour"
        )
    check_opset(opset)
    check_writable(output)
    return flavor


def _float_graph(prepared: PreparedModel, opset: int, dynamic_batch: bool, flavor: Flavor) -> onnx.ModelProto:
    """The fused model traced, at ``opset``, checked by the rules of ``flavor``.

    The plugin flavour swaps the fusion steps of ``prepared.module`` for the plugin ops (that copy only), so trace
    the portable flavour first when both are wanted.
    """
    if flavor is Flavor.PLUGIN:
        use_plugin_step(prepared.module)
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    traced = trace_onnx(
        prepared.module,
        (prepared.example,),
        input_names=["images"],
        output_names=["logits"],
        fold_limit=FOLD_LIMIT,  # folds what depends on weights only, e.g. the head-averaged key projection
        dynamic_shapes=dynamic_shapes,
        translation_table=translation_table(),
    )
    proto = convert_opset(fusable_graph(onnx_ir.serde.serialize_model(traced)), opset)  # forms onnxruntime fuses
    return check_portable(proto, dynamic_batch) if flavor is Flavor.PORTABLE else check_plugin_graph(proto)


@contextlib.contextmanager
def _float_file(onnx_tmp: Path, int8: Int8Config | None) -> Iterator[Path]:
    """Where the float graph is written: the output itself, or with ``int8`` a temporary folder (the output is the
    INT8 model)."""
    if int8 is None:
        yield onnx_tmp
        return
    with tempfile.TemporaryDirectory(prefix="tofu-edge-int8-") as folder:
        yield Path(folder) / "float.onnx"


def _float_parity(
    proto: onnx.ModelProto, path: Path, prepared: PreparedModel, batch: int | None, tolerance: ParityTolerance | None
) -> ParityReport:
    """Write the float graph to ``path`` and compare it in onnxruntime with the fused PyTorch model."""
    onnx.save(proto, path)
    session = ort_session(path)
    input_name = session.get_inputs()[0].name
    return check_parity(
        lambda images: session.run(None, {input_name: images.astype(np.float32)})[0],
        prepared.module,
        prepared.image_sets,
        batch=batch,
        tolerance=tolerance,
    )


def _metadata(prepared: PreparedModel, dynamic_batch: bool, flavor: Flavor) -> dict[str, str]:
    """The ``tofu_edge.*`` entries: the model, its fusion and input, the exporting packages, and where the weights
    came from (the seed they were drawn with, if any, and their fingerprint)."""
    plan, shape = prepared.module.tofu_plan, tuple(prepared.example.shape)
    entries = {
        MetadataKey.MODEL: prepared.name,
        MetadataKey.FLAVOR: flavor.value,
        MetadataKey.CONFIG: json.dumps(plan.config.to_dict()),
        MetadataKey.PLAN: json.dumps(plan.to_dict()),
        MetadataKey.INPUT_SHAPE: json.dumps(["batch" if dynamic_batch else shape[0], *shape[1:]]),
        MetadataKey.VERSIONS: json.dumps(package_versions(EXPORT_PACKAGES)),
        MetadataKey.WEIGHTS_SHA256: prepared.fingerprint,
    }
    if prepared.seed is not None:
        entries[MetadataKey.SEED] = str(prepared.seed)
    return prefixed(entries)
