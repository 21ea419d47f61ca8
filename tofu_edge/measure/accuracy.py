"""Accuracy of fused models against the unfused one on an ImageFolder dataset, and its accuracy-vs-throughput plot."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from timm.data import create_transform

from tofu_edge.batches import run_in_batches
from tofu_edge.checkpoint import load_checkpoint
from tofu_edge.choices import Device, StepBackend, parse_choice
from tofu_edge.config import FusionConfig
from tofu_edge.errors import ConfigError, InputShapeError
from tofu_edge.images import data_config
from tofu_edge.measure.dataset import find_images, image_batches
from tofu_edge.measure.file_reference import check_same_weights, classifier_metadata, reference_model
from tofu_edge.measure.variants import variant_name
from tofu_edge.models import create_model
from tofu_edge.models import input_shape as model_input_shape
from tofu_edge.patch import fuse, use_step
from tofu_edge.plan import FusionPlan

__all__ = ["Metrics", "MetricAccumulator", "VariantResult", "EvalReport", "evaluate", "THROUGHPUT_NOTE"]

TOP_K = 5
THROUGHPUT_NOTE = (
    "images/s: inference time only, measured during evaluation (rough; `tofu-edge bench` measures latency properly)"
)

Run = Callable[[torch.Tensor], np.ndarray]


@dataclass(frozen=True)
class Metrics:
    """Accuracy against the labels and agreement with the unfused model's outputs, over ``images`` images.

    ``top1`` and ``top5`` are ``None`` for unlabelled images (a flat folder), ``top1_agreement`` for a model
    without a classifier (its outputs are features: their argmax names no class).
    """

    images: int
    top1: float | None
    top5: float | None
    top1_agreement: float | None
    mean_cosine: float
    min_cosine: float
    seconds: float
    images_per_s: float


class MetricAccumulator:
    """Running counts over batches, so no logits are kept (``top5`` is top-min(5, classes)).

    Args:
        labelled: The labels are classes (else top-1/top-5 are not counted).
        classifier: The outputs are class logits (else top-1 agreement is not counted).
    """

    def __init__(self, *, labelled: bool = True, classifier: bool = True) -> None:
        self.labelled, self.classifier = labelled, classifier
        self.images = self.top1 = self.top5 = self.agree = 0
        self.cosine_sum, self.cosine_min, self.seconds = 0.0, float("inf"), 0.0

    def update(self, logits: np.ndarray, labels: np.ndarray, reference: np.ndarray, seconds: float = 0.0) -> None:
        """Add one batch.

        Shapes:
            logits: [B, K]
            labels: [B]
            reference: [B, K] (the unfused model's outputs for the same images)
        """
        logits, reference = logits.astype(np.float64), reference.astype(np.float64)
        k = min(TOP_K, logits.shape[1])
        top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        self.top1 += int((top[:, 0] == labels).sum())
        self.top5 += int((top == labels[:, None]).any(axis=1).sum())
        self.agree += int((top[:, 0] == reference.argmax(axis=1)).sum())
        norms = np.maximum(np.linalg.norm(logits, axis=1) * np.linalg.norm(reference, axis=1), 1e-30)
        cosine = (logits * reference).sum(axis=1) / norms
        self.cosine_sum += float(cosine.sum())
        self.cosine_min = min(self.cosine_min, float(cosine.min()))
        self.images += len(logits)
        self.seconds += seconds

    def result(self) -> Metrics:
        n = max(self.images, 1)
        return Metrics(
            images=self.images,
            top1=self.top1 / n if self.labelled else None,
            top5=self.top5 / n if self.labelled else None,
            top1_agreement=self.agree / n if self.classifier else None,
            mean_cosine=self.cosine_sum / n,
            min_cosine=self.cosine_min if self.images else float("nan"),
            seconds=self.seconds,
            images_per_s=self.images / self.seconds if self.seconds > 0 else float("nan"),
        )


@dataclass(frozen=True)
class VariantResult:
    """One evaluated model: the unfused reference, a fused PyTorch model, an ONNX file or an engine."""

    name: str
    backend: str
    plan: FusionPlan | None
    metrics: Metrics

    def to_dict(self) -> dict:
        plan = self.plan
        return {
            "name": self.name,
            "backend": self.backend,
            "r": None if plan is None else list(plan.r_schedule),
            "mode": None if plan is None else plan.config.mode.value,
            "gmacs": None if plan is None else plan.macs / 1e9,
            "macs_ratio": None if plan is None else plan.macs / plan.unfused_macs,
            **asdict(self.metrics),
        }


@dataclass(frozen=True)
class EvalReport:
    """`evaluate`'s result; ``variants[0]`` is the unfused PyTorch reference."""

    model: str
    data_dir: Path
    classes: int
    input_shape: tuple[int, ...]
    batch: int
    variants: tuple[VariantResult, ...]

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "data_dir": str(self.data_dir),
            "classes": self.classes,
            "images": self.variants[0].metrics.images,
            "input_shape": list(self.input_shape),
            "batch": self.batch,
            "throughput_note": THROUGHPUT_NOTE,
            "variants": [self._with_unfused_macs(v.to_dict()) for v in self.variants],
        }

    def _with_unfused_macs(self, row: dict) -> dict:
        """The unfused reference row gets the unfused GMACs that the fused variants' plans carry."""
        plans = [v.plan for v in self.variants if v.plan is not None]
        if row["name"] == "unfused" and plans:
            row["gmacs"], row["macs_ratio"] = plans[0].unfused_macs / 1e9, 1.0
        return row


def evaluate(
    model: str,
    data_dir: str | Path,
    configs: Sequence[FusionConfig] = (),
    *,
    img_size: int | None = None,
    checkpoint: str | Path | None = None,
    limit: int | None = None,
    batch: int = 8,
    numeric_labels: bool = False,
    onnx_path: str | Path | None = None,
    engine_path: str | Path | None = None,
    plugins: Sequence[str | Path] | None = None,
    device: Device | str = Device.CPU,
    step: StepBackend | str = StepBackend.AUTO,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Top-1/top-5 of the unfused model and of each variant, and each variant's agreement with the unfused model.

    Every batch runs through the unfused PyTorch model (the reference) and then through every variant: a fused
    copy per ``configs`` entry, or the ``onnx_path`` / ``engine_path`` file (padded to its static batch). Each
    call is timed with a wall clock (all backends return host arrays, so the work is finished) after one untimed
    warm-up call on the first batch: images/s is a rough figure next to `tofu-edge bench`.

    Args:
        model: timm model name.
        data_dir: ImageFolder tree (labels are the sorted class folders' indices, see `find_images`), or a flat
            folder of unlabelled photos (then only agreement and cosine with the unfused model are measured).
        configs: Fusions to evaluate with PyTorch.
        img_size: Square input size (default: the model's own).
        checkpoint: Weights for the model.
        limit: Evaluate at most this many images (spread over the classes).
        batch: Images per forward pass.
        numeric_labels: Class folder names are the model's class indices.
        onnx_path: Evaluate this ONNX file (onnxruntime, CPU).
        engine_path: Evaluate this TensorRT engine.
        plugins: Plugin libraries for the engine.
        device: Where the PyTorch models run (``cpu`` or ``cuda``; fp32).
        step: Where the fused PyTorch models run their fusion steps (`tofu_edge.patch.steps`).
        progress: Called with (images done, total) after every batch.

    Raises:
        TofuError: bad model, schedule, checkpoint, dataset or image; a file for another input shape, another model,
            other weights, or a diffusion step; a missing runtime.
    """
    if onnx_path is not None and engine_path is not None:
        raise ConfigError("pass --onnx or --engine, not both")
    device = parse_choice(Device, device, "device")
    if device is Device.CUDA and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch sees no CUDA device (or this torch build has no CUDA)")
    dataset = find_images(data_dir, limit=limit, numeric_labels=numeric_labels)
    file_path = Path(onnx_path or engine_path) if onnx_path or engine_path else None
    if file_path is not None:  # like with like: the file's seed, architecture and weights
        metadata = classifier_metadata(file_path)
        reference = reference_model(model, metadata, file_path, img_size=img_size, checkpoint=checkpoint)
    else:
        reference = create_model(model, img_size=img_size)
        if checkpoint is not None:
            load_checkpoint(reference, checkpoint)
    input_shape = model_input_shape(reference)
    top_label = max(label for _, label in dataset.samples)
    if reference.num_classes and top_label >= reference.num_classes:
        raise ConfigError(
            f"{dataset.root} has class index {top_label}, but {model} has {reference.num_classes} classes; "
            "pass a checkpoint with a head for these classes"
        )
    runs: list[tuple[str, str, FusionPlan | None, Run]] = [("unfused", "pytorch", None, _torch_run(reference, device))]
    for config in configs:
        fused = use_step(fuse(copy.deepcopy(reference), config), step)
        runs.append((variant_name(config), "pytorch", fused.tofu_plan, _torch_run(fused, device)))
    if onnx_path is not None:
        runs.append((file_path.name, "onnxruntime", None, _onnx_run(file_path, input_shape)))
        check_same_weights(file_path, metadata, reference, checkpoint)  # after the input shape: that says more
    if engine_path is not None:
        check_same_weights(file_path, metadata, reference, checkpoint)  # before loading TensorRT
        runs.append((file_path.name, "tensorrt", None, _engine_run(file_path, plugins)))

    classifier = bool(reference.num_classes)  # a headless model's features name no class: no top-1 of any kind
    totals = [MetricAccumulator(labelled=dataset.labelled and classifier, classifier=classifier) for _ in runs]
    transform = create_transform(**data_config(reference))
    done = 0
    for images, labels in image_batches(dataset, transform, batch):
        outputs = []
        for (_, _, _, run), total in zip(runs, totals, strict=True):
            if done == 0:
                run(images)  # warm-up, untimed: the first call of each backend pays for allocations
            started = time.perf_counter()
            logits = run(images)
            outputs.append((logits, time.perf_counter() - started, total))
        for logits, seconds, total in outputs:
            total.update(logits, labels.numpy(), outputs[0][0], seconds)
        done += len(labels)
        if progress is not None:
            progress(done, len(dataset))
    variants = tuple(
        VariantResult(name, backend, plan, total.result())
        for (name, backend, plan, _), total in zip(runs, totals, strict=True)
    )
    name = getattr(reference, "pretrained_cfg", {}).get("architecture") or model
    return EvalReport(name, dataset.root, len(dataset.classes), input_shape, batch, variants)


def _torch_run(module: torch.nn.Module, device: Device) -> Run:
    """The model on ``device``; host arrays out (on CUDA the copy waits for the work, so wall clocks are fair)."""
    module = module.to(device.value)

    def run(images: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return module(images.to(device.value)).float().cpu().numpy()

    return run


def _onnx_run(path: Path, input_shape: tuple[int, ...]) -> Run:
    from tofu_edge.export import ort_session

    session = ort_session(path)
    if len(session.get_inputs()) != 1:
        names = ", ".join(spec.name for spec in session.get_inputs())
        raise ConfigError(f"{path.name} takes several inputs ({names}), not one image batch: it is not a classifier")
    spec = session.get_inputs()[0]
    static_batch = spec.shape[0] if isinstance(spec.shape[0], int) else None
    if list(spec.shape[1:]) != list(input_shape):
        raise InputShapeError(
            f"{path.name} takes input {spec.shape}, the model's preprocessing gives "
            f"[B, {', '.join(map(str, input_shape))}]; pass the --img-size it was exported with"
        )

    def run(images: torch.Tensor) -> np.ndarray:
        return run_in_batches(
            lambda a: session.run(None, {spec.name: a})[0], images.numpy().astype(np.float32), static_batch
        )

    return run


def _engine_run(path: Path, plugins: Sequence[str | Path] | None) -> Run:
    from tofu_edge.engine import EngineRunner

    runner = EngineRunner(path, plugins)
    static_batch = runner.inputs[0].shape[0] if runner.inputs[0].shape[0] > 0 else None

    def run(images: torch.Tensor) -> np.ndarray:
        return run_in_batches(
            lambda a: next(iter(runner.run(a).outputs.values())), images.numpy().astype(np.float32), static_batch
        )

    return run
