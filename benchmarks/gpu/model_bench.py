"""Fused against unfused timm ViTs in PyTorch: latency per batch, eager and as a CUDA graph, interleaved.

Random weights (timing does not depend on them: every shape is static), ``model.half()`` on CUDA. For each
model, batch and way of running (``eager`` calls, or replays of a ``graph`` captured from one forward pass
with a static input), every variant is timed in rounds, round-robin, so that clock and thermal drift hit all
of them alike; speed-ups are against the unfused model of the same group. ``clamp=True`` caps ``r`` where a
block cannot remove that many (r = 16 in the last block of DeiT-S / ViT-B), as ToMe does.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

import tofu_edge
from benchmarks.gpu.timing import Clock, capture_graph, count_for, latency_samples, stats
from tofu_edge import FusionConfig

__all__ = ["MODELS", "BATCHES", "variant_configs", "run_model_timings"]

MODELS = {"deit_s": "deit_small_patch16_224", "vit_b": "vit_base_patch16_224"}
BATCHES = (1, 8, 64)
KINDS = ("graph", "eager")
DEFAULT_RS = (8, 13, 16)
ROUNDS = 5
CALIBRATION_CALLS = 3


@dataclass
class _Variant:
    name: str
    model: torch.nn.Module
    config: dict | None
    gmacs: float | None
    r_schedule: list[int] | None


KERNELS = "kernels "  # variant name prefix: the fusion steps run on the plugin kernels (kernel_model.py)


def variant_configs(rs=DEFAULT_RS, mean_r: int | None = 13, kernels: bool = False) -> dict[str, FusionConfig | None]:
    """``unfused``, the library's default mode at every ``r``, and ToMe's rule (``mean``) at ``mean_r``; with
    ``kernels``, each fused variant again with its fusion steps on the plugin kernels."""
    default_mode = FusionConfig(r=1).mode.value
    configs: dict[str, FusionConfig | None] = {"unfused": None}
    for r in rs:
        configs[f"{default_mode} r={r}"] = FusionConfig(r=r, clamp=True)
    if mean_r is not None and default_mode != "mean":
        configs[f"mean r={mean_r}"] = FusionConfig(r=mean_r, mode="mean", clamp=True)
    if kernels:
        configs.update({KERNELS + name: config for name, config in configs.items() if config is not None})
    return configs


def _build_variants(
    name: str, configs: dict, device: torch.device, dtype: torch.dtype, model_kwargs: dict, kernels=None
) -> list[_Variant]:
    torch.manual_seed(0)
    base = tofu_edge.create_model(name, **model_kwargs)
    unfused_gmacs = None
    try:
        unfused_gmacs = tofu_edge.resolve_plan(FusionConfig(), tofu_edge.describe_vit(base)).macs / 1e9
    except Exception:  # MACs are a label; a refactor of the plan API must not stop the timings
        pass
    variants = []
    for variant_name, config in configs.items():
        model = copy.deepcopy(base) if config is not None else base
        gmacs, schedule = unfused_gmacs, None
        if config is not None:
            tofu_edge.fuse(model, config)
            plan = model.tofu_plan
            gmacs = getattr(plan, "macs", 0) / 1e9 or None
            schedule = [block.r for block in plan.blocks]
            if variant_name.startswith(KERNELS):
                from benchmarks.gpu.kernel_model import use_kernel_blocks

                use_kernel_blocks(model, kernels)
        model = model.to(device=device, dtype=dtype).eval()
        variants.append(_Variant(variant_name, model, config.to_dict() if config else None, gmacs, schedule))
    return variants


def _runners(variants: list[_Variant], images: torch.Tensor, kind: str) -> tuple[dict[str, Callable], list, dict]:
    """One callable per variant for ``kind``, the graphs to keep alive, and capture errors by variant."""
    runners, keep, errors = {}, [], {}
    for variant in variants:
        model = variant.model
        if kind == "eager":
            runners[variant.name] = lambda model=model: model(images)
            continue
        try:
            graph, output = capture_graph(lambda model=model: model(images))
        except Exception as error:  # e.g. an op that cannot be captured: recorded, the others go on
            errors[variant.name] = f"{type(error).__name__}: {error}"
            torch.cuda.synchronize()
            continue
        keep.append((graph, output))
        runners[variant.name] = graph.replay
    return runners, keep, errors


def _interleaved(clock: Clock, runners: dict[str, Callable], budget_s: float) -> dict[str, list[float]]:
    """Latency samples of every runner, in ROUNDS round-robin rounds sized to fit ``budget_s``."""
    per_call = {}
    for name, run in runners.items():
        run()  # warm-up
        per_call[name] = statistics.median(latency_samples(clock, run, CALIBRATION_CALLS))
    samples: dict[str, list[float]] = {name: [] for name in runners}
    share = budget_s / ROUNDS / max(1, len(runners))
    counts = {name: count_for(per_call[name], share, low=2, high=40) for name in runners}
    for _ in range(ROUNDS):
        for name, run in runners.items():
            samples[name] += latency_samples(clock, run, counts[name])
    return samples


def run_model_timings(
    device: torch.device,
    budget_s: float,
    models: dict[str, str] | None = None,
    batches=BATCHES,
    dtype: torch.dtype = torch.float16,
    configs: dict | None = None,
    model_kwargs: dict | None = None,
    log: Callable[[str], None] = print,
    kernels=None,
) -> dict:
    """Time every model, batch and kind (graph, eager) within ``budget_s``; groups past it are listed as skipped.

    Args:
        device: ``cuda`` for real timings; ``cpu`` runs the eager kind with host clocks (a smoke test).
        budget_s: Seconds for the whole phase, model building included.
        models: Short name to timm name; None means `MODELS`.
        batches: Batch sizes.
        dtype: Weights and inputs (fp16 on CUDA).
        configs: Variant name to `FusionConfig` (None = unfused); None means `variant_configs()`.
        model_kwargs: Passed to `tofu_edge.create_model` (e.g. a smaller model for a smoke test).
        log: Progress lines.
        kernels: A `CudaKernels`: also time every fused variant with its fusion steps on the plugin kernels.

    Returns:
        ``{"results": [...], "errors": [...], "skipped": [...], "variants": {...}}``.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    clock = Clock(device)
    models = MODELS if models is None else models
    configs = variant_configs(kernels=kernels is not None) if configs is None else configs
    kinds = KINDS if cuda else ("eager",)
    deadline = time.perf_counter() + budget_s
    groups_total = len(models) * len(batches) * len(kinds)
    groups_done = 0
    results, errors, skipped = [], [], []
    described = {}
    for short, name in models.items():
        if time.perf_counter() >= deadline:
            skipped += [f"{short} b{b} {k}" for b in batches for k in kinds]
            continue
        try:
            variants = _build_variants(name, configs, device, dtype, model_kwargs or {}, kernels)
        except Exception as error:
            errors.append({"model": short, "error": f"building: {type(error).__name__}: {error}"})
            groups_done += len(batches) * len(kinds)
            continue
        described[short] = {
            "timm_name": name,
            "variants": {v.name: {"config": v.config, "gmacs": v.gmacs, "r_schedule": v.r_schedule} for v in variants},
        }
        image_size = variants[0].model.patch_embed.img_size
        for batch in batches:
            images = torch.randn(batch, 3, *image_size, device=device, dtype=dtype)
            for kind in kinds:
                left = deadline - time.perf_counter()
                if left <= 0:
                    skipped.append(f"{short} b{batch} {kind}")
                    groups_done += 1
                    continue
                group_budget = left / (groups_total - groups_done)
                groups_done += 1
                try:
                    results += _time_group(clock, short, batch, kind, variants, images, group_budget, errors, log)
                except Exception as error:
                    errors.append(
                        {"model": short, "batch": batch, "kind": kind, "error": f"{type(error).__name__}: {error}"}
                    )
                if cuda:
                    torch.cuda.empty_cache()
        del variants
        if cuda:
            torch.cuda.empty_cache()
    return {"results": results, "errors": errors, "skipped": skipped, "models": described}


def _time_group(clock, short, batch, kind, variants, images, budget_s, errors, log) -> list[dict]:
    runners, keep, capture_errors = _runners(variants, images, kind)
    for variant_name, error in capture_errors.items():
        errors.append({"model": short, "batch": batch, "kind": kind, "variant": variant_name, "error": error})
    finite = {}
    if kind == "eager":  # one output per variant: random weights in fp16 must still give finite logits
        for variant in variants:
            finite[variant.name] = bool(torch.isfinite(variant.model(images)).all())
    samples = _interleaved(clock, runners, budget_s)
    del keep
    base = stats(samples["unfused"])["median_us"] if "unfused" in samples else None
    rows = []
    for variant in variants:
        if variant.name not in samples:
            continue
        summary = stats(samples[variant.name])
        median_ms = summary["median_us"] / 1e3
        row = {
            "model": short,
            "batch": batch,
            "kind": kind,
            "variant": variant.name,
            "median_ms": median_ms,
            "p10_ms": summary["p10_us"] / 1e3,
            "p90_ms": summary["p90_us"] / 1e3,
            "samples": summary["samples"],
            "images_per_s": batch / (median_ms / 1e3),
            "speedup": base / summary["median_us"] if base else None,
            "gmacs": variant.gmacs,
        }
        if variant.name in finite:
            row["finite_output"] = finite[variant.name]
        rows.append(row)
    line = ", ".join(
        f"{r['variant']} {r['median_ms']:.2f} ms" + (f" ({r['speedup']:.2f}x)" if r["speedup"] else "") for r in rows
    )
    log(f"  {short} b{batch} {kind}: {line}")
    return rows
