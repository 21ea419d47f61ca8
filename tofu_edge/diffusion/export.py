"""`export_onnx` for diffusion models: one denoising step of a fused UNet / transformer as portable ONNX.

The graph takes the model's static inputs (latent, timestep, conditioning), is checked with the same portable
rules as the ViT export (standard ops, static shapes, no reducing scatter), and is parity-checked against PyTorch
with onnxruntime before anything is written. Models over ~1.5 GB of weights (SD's UNet is 3.4 GB in fp32) are
written with external data, ``<name>.onnx`` plus ``<name>.onnx.data``; all files appear together or not at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_ir
import torch

from tofu_edge.choices import Flavor
from tofu_edge.diffusion.apply import DiffusionPlan, apply, is_applied, latent_size, remove
from tofu_edge.diffusion.config import DiffusionFusionConfig
from tofu_edge.diffusion.family import Family
from tofu_edge.diffusion.inputs import call_step, example_inputs, input_family, input_ranges
from tofu_edge.errors import ConfigError, ExportError
from tofu_edge.export.graph import check_opset, check_portable, convert_opset, op_counts, set_metadata
from tofu_edge.export.metadata import MetadataKey, prefixed
from tofu_edge.export.parity import ParityReport, ParityTolerance, compare_outputs
from tofu_edge.export.session import ort_session
from tofu_edge.export.trace import trace_onnx
from tofu_edge.files import atomic_outputs, check_writable
from tofu_edge.versions import EXPORT_PACKAGES, package_versions
from tofu_edge.weights import weights_fingerprint

__all__ = ["DiffusionExportReport", "export_onnx", "EXTERNAL_DATA_BYTES"]

EXTERNAL_DATA_BYTES = 1_500_000_000  # above this much weight data, write it beside the graph (protobuf stops at 2 GB)
FOLD_LIMIT = 1 << 20  # elements: fold small weight-only subgraphs, leave the big weights alone
PARITY_TOLERANCE = ParityTolerance(min_cosine=0.999, min_top1_agreement=0.0)  # top-1 means nothing for latents
PACKAGES = (*EXPORT_PACKAGES, "diffusers")


@dataclass(frozen=True)
class DiffusionExportReport:
    """What `export_onnx` wrote and checked (also saved as JSON beside the ONNX file)."""

    onnx_path: Path
    report_path: Path
    data_path: Path | None
    model: str
    inputs: dict[str, list[int]]
    opset: int
    plan: DiffusionPlan
    parity: ParityReport
    seconds: dict[str, float]
    ops: dict[str, int]
    tensorrt_rtx: dict | None = None
    seed: int | None = None
    weights_sha256: str | None = None

    def to_dict(self) -> dict:
        return {
            "onnx": str(self.onnx_path),
            "external_data": None if self.data_path is None else str(self.data_path),
            "model": self.model,
            "inputs": self.inputs,
            "opset": self.opset,
            "plan": self.plan.to_dict(),
            "parity": self.parity.to_dict(),
            "tensorrt_rtx": self.tensorrt_rtx,
            "seconds": self.seconds,
            "ops": self.ops,
            "seed": self.seed,
            "weights_sha256": self.weights_sha256,
            "versions": package_versions(PACKAGES),
        }


def export_onnx(
    model: torch.nn.Module,
    output: str | Path,
    config: DiffusionFusionConfig | None = None,
    *,
    sample_size: int | tuple[int, int] | None = None,
    batch: int = 1,
    encoder_length: int | None = None,
    opset: int = 18,
    parity_runs: int = 2,
    tolerance: ParityTolerance | None = None,
    external_data: bool | None = None,
    tensorrt_rtx: bool = False,
    seed: int | None = None,
) -> DiffusionExportReport:
    """Fuse a diffusers model, export one step to portable ONNX, check it, and write the files.

    The model is fused in place for the export and left as it was afterwards (unfused, or fused as before).

    Args:
        model: A supported diffusers model (``tofu_edge.diffusion.SUPPORTED``).
        output: The ``.onnx`` path; the report goes to the same stem with ``.json``, external data to
            ``<output>.data``.
        config: The fusion; ``None`` exports the unfused model.
        sample_size: Latent size (default: the model's ``config.sample_size``).
        batch: Static batch size (2 for classifier-free guidance in one call).
        encoder_length: Conditioning tokens (default 77 for a UNet, 120 for PixArt).
        opset: 18 (default) or 17 (only where ONNX's converter takes the graph down: not with GEGLU's Split).
        parity_runs: Random input sets checked against PyTorch (a constant latent is checked too).
        tolerance: Parity pass criteria (default: cosine >= 0.999 per sample).
        external_data: Force external data on or off; default by size (`EXTERNAL_DATA_BYTES`).
        tensorrt_rtx: Also parse and build the graph with TensorRT-RTX on the CPU (``pip install tensorrt-rtx``).
        seed: The seed the model's random weights were drawn with (`create_diffusion_model`), recorded as
            ``tofu_edge.seed``; ``None`` for loaded weights. The weights' fingerprint is recorded either way.

    Raises:
        TofuError: bad input (model, config, size, output path, opset), exit code 2; ExportError when TensorRT-RTX
            rejects the graph.
        ParityError: parity out of tolerance, exit code 1 (nothing is written).
    """
    started = time.perf_counter()
    output = Path(output)
    if batch < 1 or parity_runs < 1:
        raise ConfigError(f"batch and parity_runs must be >= 1, got {batch} and {parity_runs}")
    check_opset(opset)
    check_writable(output)
    family = input_family(model)
    fingerprint = weights_fingerprint(model)  # before fusion (which keeps the state_dict keys anyway)
    size = latent_size(model, sample_size)
    with _fused(model, config or DiffusionFusionConfig(ratio=0.0), size) as plan:
        feeds = [example_inputs(model, family, size, batch, encoder_length, seed) for seed in range(parity_runs)]
        feeds.append(example_inputs(model, family, size, batch, encoder_length, 0, flat=True))
        adapter = _StepAdapter(model, family)
        program = _trace(adapter, feeds[0])
        traced = time.perf_counter()
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        external = weight_bytes > EXTERNAL_DATA_BYTES if external_data is None else external_data
        with _scratch_dir(output) as scratch, atomic_outputs(*_targets(output, external)) as temps:
            graph_file = scratch / output.name
            onnx_ir.save(program, graph_file, external_data=f"{output.name}.data" if external else None)
            del program  # a UNet's weights: only the file keeps them from here on
            proto = _checked_graph(graph_file, opset)
            set_metadata(proto, _metadata(plan, feeds[0], input_ranges(model, family), fingerprint, seed))
            onnx.save(proto, str(graph_file))
            parity = _parity(graph_file, adapter, feeds, tolerance or PARITY_TOLERANCE)
            trt = _tensorrt_rtx(graph_file) if tensorrt_rtx else None
            finished = time.perf_counter()
            report = DiffusionExportReport(
                onnx_path=output,
                report_path=output.with_suffix(".json"),
                data_path=output.with_name(f"{output.name}.data") if external else None,
                model=type(model).__name__,
                inputs={name: list(value.shape) for name, value in feeds[0].items()},
                opset=opset,
                plan=plan,
                parity=parity,
                seconds={"trace": traced - started, "total": finished - started},
                ops=op_counts(proto),
                tensorrt_rtx=trt,
                seed=seed,
                weights_sha256=fingerprint,
            )
            parity.raise_if_failed(f"{output.name}: onnxruntime vs PyTorch")
            os.replace(graph_file, temps[0])
            if external:
                os.replace(scratch / f"{output.name}.data", temps[1])
            temps[-1].write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


@contextlib.contextmanager
def _fused(model: torch.nn.Module, config: DiffusionFusionConfig, size: tuple[int, int]) -> Iterator[DiffusionPlan]:
    """``model`` fused with ``config`` in eval mode, its plan; afterwards as it was (unfused, or fused as before, and
    in its training mode)."""
    previous = model.tofu_plan if is_applied(model) else None
    was_training = model.training
    try:
        apply(model.eval(), config, sample_size=size)
        yield model.tofu_plan
    finally:
        remove(model)
        if previous is not None:
            apply(model, previous.config, sample_size=previous.sample_size)
        model.train(was_training)


def _checked_graph(graph_file: Path, opset: int) -> onnx.ModelProto:
    """The graph at ``graph_file`` (external data not loaded) at ``opset``, checked by the portable rules."""
    proto = convert_opset(onnx.load(str(graph_file), load_external_data=False), opset)
    with _working_dir(graph_file.parent):  # the checker finds external data relative to the working directory
        return check_portable(proto, dynamic_batch=False)


class _StepAdapter(torch.nn.Module):
    """One denoising step with positional tensor inputs and one tensor output, as the exporter wants it."""

    def __init__(self, model: torch.nn.Module, family: Family) -> None:
        super().__init__()
        self.model, self.family = model, family

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return call_step(self.model, self.family, inputs)


def _trace(adapter: torch.nn.Module, feed: dict[str, torch.Tensor]) -> onnx_ir.Model:
    """The step as an ONNX IR model (opset 18), weight-only subgraphs up to `FOLD_LIMIT` folded."""
    model = trace_onnx(
        adapter, tuple(feed.values()), input_names=list(feed), output_names=["noise_pred"], fold_limit=FOLD_LIMIT,
        optimize=False,
    )  # fmt: skip
    _drop_noop_squeezes(model)
    return model


def _drop_noop_squeezes(model: onnx_ir.Model) -> None:
    """Remove ``Squeeze`` nodes on axes whose size is not 1: ``torch.squeeze(x, dim)`` leaves such an ``x`` as it is
    (PixArt squeezes its ``[B, N, C]`` output on ``dim=1``), but the exporter writes an ONNX ``Squeeze``, which is
    invalid there."""
    for node in list(model.graph):
        if node.op_type != "Squeeze" or len(node.inputs) != 2 or node.inputs[1] is None:
            continue
        data, axes = node.inputs
        if axes.const_value is None or data.shape is None or not data.shape.is_static():
            continue
        dims = [data.shape[int(a)] for a in axes.const_value.numpy().reshape(-1)]
        if all(d != 1 for d in dims) and node.outputs[0] not in model.graph.outputs:
            node.outputs[0].replace_all_uses_with(data)
            model.graph.remove(node, safe=True)


def _parity(
    graph_file: Path, adapter: torch.nn.Module, feeds: list[dict[str, torch.Tensor]], tolerance: ParityTolerance
) -> ParityReport:
    """onnxruntime against PyTorch on every input set: random ones, and a constant latent (ties in every match)."""
    session = ort_session(graph_file)
    got, want = {"random": [], "flat": []}, {"random": [], "flat": []}
    for index, feed in enumerate(feeds):
        name = "flat" if index == len(feeds) - 1 else "random"
        with torch.no_grad():
            want[name].append(adapter(*feed.values()).numpy())
        got[name].append(session.run(None, {k: v.numpy() for k, v in feed.items()})[0])
    sets = tuple(compare_outputs(name, np.concatenate(got[name]), np.concatenate(want[name])) for name in got)
    return ParityReport(sets=sets, tolerance=tolerance)


def _tensorrt_rtx(graph_file: Path) -> dict:
    """TensorRT-RTX parse + build on the CPU. Raises: ExportError when TensorRT rejects the graph."""
    from tofu_edge.engine import check_with_tensorrt_rtx

    check = check_with_tensorrt_rtx(graph_file, build=True)
    if not check.ok:
        raise ExportError(f"TensorRT-RTX rejected the graph: {'; '.join(check.errors[:3])}")
    result = check.to_dict()
    result["onnx_path"] = None  # the scratch file; the report names the final one
    return result


def _targets(output: Path, external: bool) -> list[Path]:
    data = [output.with_name(f"{output.name}.data")] if external else []
    return [output, *data, output.with_suffix(".json")]


@contextlib.contextmanager
def _scratch_dir(output: Path):
    """A private folder beside ``output`` (same file system, so files move into place by rename)."""
    folder = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _working_dir(folder: Path):
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _metadata(
    plan: DiffusionPlan,
    feed: dict[str, torch.Tensor],
    ranges: dict[str, list[int]],
    fingerprint: str,
    seed: int | None,
) -> dict[str, str]:
    """The ``tofu_edge.*`` entries: the model, its fusion, inputs and their ranges (`tofu_edge.engine.feeds` reads
    them), the exporting packages, and where the weights came from."""
    entries = {
        MetadataKey.MODEL: plan.model,
        MetadataKey.FLAVOR: Flavor.PORTABLE.value,
        MetadataKey.DIFFUSION_PLAN: json.dumps(plan.to_dict()),
        MetadataKey.INPUTS: json.dumps({k: list(v.shape) for k, v in feed.items()}),
        MetadataKey.INPUT_RANGES: json.dumps(ranges),
        MetadataKey.VERSIONS: json.dumps(package_versions(PACKAGES)),
        MetadataKey.WEIGHTS_SHA256: fingerprint,
    }
    if seed is not None:
        entries[MetadataKey.SEED] = str(seed)
    return prefixed(entries)
