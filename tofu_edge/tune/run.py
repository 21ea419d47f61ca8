"""`tune`: the library entry of `tofu-edge tune`."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch

from tofu_edge.tune.cache import TuneCache
from tofu_edge.tune.images import tuning_images
from tofu_edge.tune.report import TuneReport
from tofu_edge.tune.search import Progress, Tuner
from tofu_edge.tune.settings import TuneSettings
from tofu_edge.tune.target import Target

__all__ = ["tune", "DEFAULT_IMAGES"]

DEFAULT_IMAGES = 32
RANDOM_WEIGHTS_SEED = 0


def tune(
    model: str | torch.nn.Module,
    images: str | Path | None,
    target: Target,
    settings: TuneSettings | None = None,
    *,
    img_size: int | None = None,
    checkpoint: str | Path | None = None,
    limit: int = DEFAULT_IMAGES,
    cache_path: str | Path,
    resume: bool = False,
    progress: Progress | None = None,
) -> TuneReport:
    """Search the schedules of ``model`` for the best one that meets ``target`` on ``settings.backend``.

    Args:
        model: timm model name, or a timm ViT object (not changed; its weights are fingerprinted).
        images: A flat folder of photos, or an ImageFolder tree (then top-1 is against its labels); ``None``: the
            ImageNet photos the ``foolbox`` package ships.
        target: What to meet.
        settings: Backend, device, batch, threads, compile, INT8, budget.
        img_size: Square input size (default: the model's own).
        checkpoint: Weights to load.
        limit: Tuning images (spread over the folder).
        cache_path: Where the measurements are kept as they are made.
        resume: Reuse the measurements in ``cache_path`` (same settings only).
        progress: Called with the phase and the fraction of the budget spent.

    Raises:
        TofuError: bad model, checkpoint, images, target or settings; a backend that is not installed.
    """
    from tofu_edge.checkpoint import load_checkpoint
    from tofu_edge.measure.environment import describe_environment
    from tofu_edge.models import create_model
    from tofu_edge.patch import describe_vit
    from tofu_edge.weights import seeded, weights_fingerprint

    started = time.perf_counter()
    settings = settings or TuneSettings()
    settings.check_backend()
    if isinstance(model, str):
        with seeded(RANDOM_WEIGHTS_SEED):  # random weights (no checkpoint) are the same on every run, and resume
            network = create_model(model, img_size=img_size).eval()
        if checkpoint is not None:
            load_checkpoint(network, checkpoint)
    else:
        network, model = model.eval(), getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
    pictures, labels, unreadable = tuning_images(network, None if images is None else Path(images), limit)
    context = {
        "model": model,
        "img_size": img_size,
        "weights": weights_fingerprint(network),
        "images": hashlib.sha256(pictures.numpy().tobytes()).hexdigest()[:16],
        **settings.context(),
    }
    cache = TuneCache(Path(cache_path), context, resume)
    tuner = Tuner(network, describe_vit(network), pictures, labels, target, settings, cache, progress, started)
    outcome = tuner.run()
    if unreadable:
        outcome.notes.insert(0, f"{unreadable} image files could not be read and were skipped")
    return TuneReport(
        model=model,
        img_size=img_size,
        checkpoint=None if checkpoint is None else str(checkpoint),
        target=target,
        settings={**settings.context(), "int8": settings.int8, "budget_s": settings.budget_s},
        images=len(pictures),
        labelled=tuner.labelled,
        points=tuple(outcome.points),
        chosen=outcome.chosen,
        met=outcome.met,
        remeasured=outcome.remeasured,
        unfused_ms=outcome.unfused_ms,
        notes=tuple(outcome.notes),
        seconds=time.perf_counter() - started,
        phases=outcome.phases,
        environment=describe_environment(threads=settings.threads, device=settings.device.value),
    )
