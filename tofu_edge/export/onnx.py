"""`export_onnx`: a fused timm ViT as a static-shape, portable ONNX file plus a JSON report."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxscript.optimizer
import torch

from tofu_edge.checkpoint import load_checkpoint
from tofu_edge.choices import Flavor, parse_choice
from tofu_edge.config import FusionConfig
from tofu_edge.errors import ConfigError, ExportError
from tofu_edge.export.calibration import calibration_images
from tofu_edge.export.graph import check_plugin_graph, check_portable, convert_opset, op_counts, set_metadata
from tofu_edge.export.int8_export import INT8_TOLERANCE, Int8Report, quantize_export
from tofu_edge.export.parity import ParityReport, ParityTolerance, check_parity
from tofu_edge.export.plugin import translation_table, use_plugin_step
from tofu_edge.export.quantize import Int8Config, Int8Target
from tofu_edge.export.rewrite import fusable_graph
from tofu_edge.export.session import ort_session
from tofu_edge.files import atomic_outputs, check_writable
from tofu_edge.images import bundled_photo_folder, flat_images, photo_images, random_images
from tofu_edge.models import create_model
from tofu_edge.patch import fuse, use_step
from tofu_edge.plan import FusionPlan
from tofu_edge.versions import EXPORT_PACKAGES, package_versions
from tofu_edge.weights import seeded, weights_fingerprint

__all__ = ["ExportReport", "export_onnx"]


RANDOM_PARITY_IMAGES = 4
PHOTO_PARITY_IMAGES = 8
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
        tolerance: Parity pass criteria; with ``int8`` they judge the INT8 model against the float fused model
            (default `INT8_TOLERANCE`), and the float graph is held to the float defaults first.
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
    output = Path(output)
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    flavor = parse_choice(Flavor, flavor, "flavor")
    if int8 is not None and flavor is Flavor.PLUGIN and int8.target is Int8Target.ORT_CPU:
        raise ConfigError(
            "INT8 for onnxruntime on CPUs takes the portable flavour; use --flavor portable, or --int8-target tensorrt "
            "for the plugin flavour"
        )
    convert_opset(onnx.helper.make_model(onnx.helper.make_graph([], "probe", [], [])), opset)  # validates opset
    check_writable(output)
    report_path = output.with_suffix(".json")

    if isinstance(model, str):
        with seeded(seed):
            name, module = model, create_model(model, img_size=img_size, pretrained=pretrained)
    else:
        name, module = type(model).__name__, copy.deepcopy(model).eval()
    if checkpoint is not None:
        load_checkpoint(module, checkpoint)
    fingerprint = weights_fingerprint(module)
    random_weights = isinstance(model, str) and checkpoint is None and not pretrained
    seed_used = seed if random_weights else None  # loaded weights (or a model object's) were not drawn from it
    reference = copy.deepcopy(module) if int8 is not None else None  # the unfused float model, for the INT8 report
    use_step(fuse(module, config or FusionConfig()), "torch")  # the standard-op step, whatever the device
    name = module.tofu_plan.arch.name if isinstance(model, str) else name
    image_sets = _parity_sets(module, parity_images)
    bundled_skip = PHOTO_PARITY_IMAGES if parity_images is None else 0  # parity's bundled photos: not calibration's
    calibration = calibration_images(int8, module, bundled_skip) if int8 is not None else None
    example = image_sets["random"][:1].expand(batch, -1, -1, -1).contiguous()
    input_shape = tuple(example.shape)

    portable = None
    if flavor is Flavor.PLUGIN and calibration is not None:  # onnxruntime calibrates the portable twin
        portable = check_portable(convert_opset(_trace(module, example, dynamic_batch), opset), dynamic_batch)
    if flavor is Flavor.PLUGIN:
        use_plugin_step(module)  # this copy only: the fusion steps become the plugin ops
    proto = _trace(module, example, dynamic_batch)
    traced = time.perf_counter()
    proto = convert_opset(proto, opset)
    proto = check_portable(proto, dynamic_batch) if flavor is Flavor.PORTABLE else check_plugin_graph(proto)
    set_metadata(proto, _metadata(name, module.tofu_plan, input_shape, dynamic_batch, flavor))
    set_metadata(proto, _weights_metadata(seed_used, fingerprint))

    scratch = tempfile.TemporaryDirectory(prefix="tofu-edge-int8-") if int8 is not None else contextlib.nullcontext()
    with atomic_outputs(output, report_path) as (onnx_tmp, report_tmp), scratch as folder:
        float_path = onnx_tmp if int8 is None else Path(folder) / "float.onnx"
        onnx.save(proto, float_path)
        session = ort_session(float_path)
        input_name = session.get_inputs()[0].name
        parity = check_parity(
            lambda images: session.run(None, {input_name: images.astype(np.float32)})[0],
            module,
            image_sets,
            batch=None if dynamic_batch else batch,
            tolerance=tolerance if int8 is None else None,
        )
        int8_report = None
        if int8 is not None:
            parity.raise_if_failed(f"{output.name}: float graph, onnxruntime vs PyTorch")
            proto, int8_report = quantize_export(
                float_path,
                onnx_tmp,
                int8,
                module=module,
                reference=reference,
                image_sets=image_sets,
                batch=None if dynamic_batch else batch,
                calibration=calibration,
                scratch=Path(folder),
                tolerance=tolerance or INT8_TOLERANCE,
                portable=portable,
                dynamic_batch=dynamic_batch,
                progress=calibration_progress,
            )
        finished = time.perf_counter()
        report = ExportReport(
            onnx_path=output,
            report_path=report_path,
            model=name,
            input_shape=input_shape,
            dynamic_batch=dynamic_batch,
            opset=opset,
            plan=module.tofu_plan,
            flavor=flavor,
            parity=parity,
            seconds={"trace": traced - started, "total": finished - started},
            ops=op_counts(proto),
            int8=int8_report,
            seed=seed_used,
            weights_sha256=fingerprint,
        )
        parity.raise_if_failed(f"{output.name}: onnxruntime vs PyTorch")
        if int8_report is not None:
            int8_report.parity.raise_if_failed(f"{output.name}: INT8 vs float fused (onnxruntime)")
        report_tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _trace(module: torch.nn.Module, example: torch.Tensor, dynamic_batch: bool) -> onnx.ModelProto:
    """The fused model as ONNX (opset 18) through torch's dynamo exporter, optimized, constant-folded and rewritten
    into onnxruntime's fusable forms (`fusable_graph`)."""
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    # the exporter prints progress on stdout; keep stdout for results
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                opset_version=18,
                dynamic_shapes=dynamic_shapes,
                input_names=["images"],
                output_names=["logits"],
                verbose=False,
                optimize=True,
                custom_translation_table=translation_table(),
            )
        except (torch.onnx.errors.OnnxExporterError, RuntimeError) as error:
            first_line = str(error).strip().splitlines()[0]
            raise ExportError(f"torch.onnx.export failed: {first_line}") from None
    # fold what depends on weights only (e.g. the head-averaged key projection) into initializers
    folded = onnxscript.optimizer.optimize(
        program.model_proto, input_size_limit=FOLD_LIMIT, output_size_limit=FOLD_LIMIT
    )
    return fusable_graph(folded)  # GELU, reshapes and transposes in the forms onnxruntime fuses


def _parity_sets(module: torch.nn.Module, parity_images: str | Path | None) -> dict[str, torch.Tensor]:
    shape = (module.patch_embed.proj.in_channels, *module.patch_embed.img_size)
    sets = {"random": random_images(RANDOM_PARITY_IMAGES, shape), "flat": flat_images(module)}
    if parity_images is not None:
        sets["photos"] = photo_images(module, Path(parity_images), limit=PHOTO_PARITY_IMAGES)
    elif (bundled := bundled_photo_folder()) is not None:
        sets["photos"] = photo_images(module, bundled, limit=PHOTO_PARITY_IMAGES, pattern="imagenet_*")
    return sets


def _metadata(
    name: str, plan: FusionPlan, input_shape: tuple[int, ...], dynamic_batch: bool, flavor: Flavor
) -> dict[str, str]:
    return {
        "tofu_edge.model": name,
        "tofu_edge.flavor": flavor.value,
        "tofu_edge.config": json.dumps(plan.config.to_dict()),
        "tofu_edge.plan": json.dumps(plan.to_dict()),
        "tofu_edge.input_shape": json.dumps(["batch" if dynamic_batch else input_shape[0], *input_shape[1:]]),
        "tofu_edge.versions": json.dumps(package_versions(EXPORT_PACKAGES)),
    }


def _weights_metadata(seed: int | None, fingerprint: str) -> dict[str, str]:
    """Where the weights came from: the seed they were drawn with (none for a model object) and their fingerprint."""
    return {"tofu_edge.weights_sha256": fingerprint} | ({} if seed is None else {"tofu_edge.seed": str(seed)})
