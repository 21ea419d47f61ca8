"""Fused against unfused timm ViTs in PyTorch on a GPU: every fusion-step backend, eager and as CUDA graphs, and
torch.compile, timed side by side.

Random weights (timing does not depend on them: every shape is static), ``model.half()`` on CUDA. Variants
(`variant_specs`): the unfused model; the default mode at r = 8 / 13 / 16 and at r = 13 with ``align=8`` with its
fusion steps on the Triton kernels (``triton``, what ``auto`` picks on CUDA); r = 13 on the PyTorch ops (``torch``)
and on the plugin kernels (``kernels``, where the library is built). For each model, batch and way of running
(``eager`` calls, or replays of a ``graph`` captured from one forward pass), the variants are timed round-robin by
`tofu_edge.measure.measure_interleaved` (CUDA events around each call; each round starts one variant later), and
summarised by `tofu_edge.stats.LatencyStats`; speed-ups are medians of per-round ratios against the unfused model.
`run_compiled_timings` does the same for ``torch.compile``d unfused and Triton-fused models. `run_edge_proxy` runs the
graph kind on 8 or 16 SMs only (a CUDA green context), a stand-in for a Jetson Orin's GPU that keeps the H200's
memory bandwidth and clocks. ``clamp=True`` caps ``r`` where a block cannot remove that many (r = 16 in the last
block of DeiT-S / ViT-B), as ToMe does.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

import tofu_edge
from benchmarks.gpu.timing import capture_graph
from tofu_edge import FusionConfig
from tofu_edge.measure import Runner, measure_interleaved, paired_speedup
from tofu_edge.stats import LatencyStats

__all__ = [
    "MODELS",
    "BATCHES",
    "variant_specs",
    "run_model_timings",
    "run_compiled_timings",
    "run_edge_proxy",
    "on_sms",
]

MODELS = {"deit_s": "deit_small_patch16_224", "vit_b": "vit_base_patch16_224"}
BATCHES = (1, 8, 64, 256)
KINDS = ("graph", "eager")
WARMUP_ROUNDS = 3


@dataclass(frozen=True)
class VariantSpec:
    """A variant: its fusion (None: unfused) and the step backend its fused blocks run on."""

    config: FusionConfig | None
    step: str = "auto"


def variant_specs(rs=(8, 13, 16), align_r: int | None = 13, kernels: bool = False) -> dict[str, VariantSpec]:
    """``unfused``; ``triton r=R`` for every r (and ``align=8`` at ``align_r``); ``torch r=13`` and, with
    ``kernels``, ``kernels r=13``."""
    specs = {"unfused": VariantSpec(None)}
    for r in rs:
        specs[f"triton r={r}"] = VariantSpec(FusionConfig(r=r, clamp=True), "triton")
    if align_r is not None:
        specs[f"triton r={align_r} align=8"] = VariantSpec(FusionConfig(r=align_r, clamp=True, align=8), "triton")
    specs["torch r=13"] = VariantSpec(FusionConfig(r=13, clamp=True), "torch")
    if kernels:
        specs["kernels r=13"] = VariantSpec(FusionConfig(r=13, clamp=True), "kernels")
    return specs


def build_models(
    name: str, specs: dict[str, VariantSpec], device: torch.device, dtype: torch.dtype, kernels=None, **model_kwargs
) -> dict[str, torch.nn.Module]:
    """Each variant of timm's ``name`` (same random weights), on ``device`` in ``dtype``, in eval mode."""
    torch.manual_seed(0)
    base = tofu_edge.create_model(name, **model_kwargs).to(device=device, dtype=dtype).eval()
    models = {}
    for variant, spec in specs.items():
        if spec.config is None:
            models[variant] = base
            continue
        step = spec.step
        if step == "kernels":
            from tofu_edge.export.cuda_kernels import KernelStep

            step = KernelStep(kernels)
        models[variant] = tofu_edge.use_step(tofu_edge.fuse(copy.deepcopy(base), spec.config), step)
    return models


def runner(name: str, model: torch.nn.Module, images: torch.Tensor, kind: str) -> tuple[Runner, object]:
    """A runner for one variant: an eager call, or a CUDA graph replay, timed with CUDA events (host clock on the
    CPU); the second value keeps the graph alive."""
    if images.device.type != "cuda":  # the CPU dry run: a synchronous call, the wall clock around it

        def call_cpu() -> None:
            model(images)

        return Runner(name, call_cpu, images.shape[0]), None
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    held = None
    call: Callable[[], object] = lambda: model(images)  # noqa: E731
    if kind == "graph":
        graph, output = capture_graph(call)
        held, call = (graph, output), graph.replay

    def timed() -> float:
        start.record()
        call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    return Runner(name, timed, images.shape[0]), held


def time_group(models: dict[str, torch.nn.Module], images: torch.Tensor, kind: str, seconds: float) -> tuple:
    """Rows of one (model, batch, kind) group and the variants that failed (capture errors: recorded, not fatal)."""
    runners, keep, errors = [], [], {}
    for name, model in models.items():
        try:
            made, held = runner(name, model, images, kind)
        except Exception as error:  # e.g. an op that cannot be captured
            errors[name] = f"{type(error).__name__}: {error}"
            continue
        runners.append(made)
        keep.append(held)
    samples = measure_interleaved(runners, warmup=WARMUP_ROUNDS, seconds=seconds)
    rows = []
    for made in runners:
        stats = LatencyStats.from_samples(samples[made.name], made.batch)
        speedup = paired_speedup(samples[runners[0].name], samples[made.name])
        rows.append({"variant": made.name, "speedup": speedup, **stats.to_dict()})
    del keep
    return rows, errors


def run_model_timings(
    device: torch.device,
    budget_s: float,
    models: dict[str, str] | None = None,
    batches=BATCHES,
    kinds=KINDS,
    dtype: torch.dtype = torch.float16,
    specs: dict[str, VariantSpec] | None = None,
    kernels=None,
    log: Callable[[str], None] = print,
    **model_kwargs,
) -> dict:
    """Time every model, batch and kind within ``budget_s``; groups past it are listed as skipped.

    Returns:
        ``{"results": [...], "errors": [...], "skipped": [...], "variants": {...}}``.
    """
    specs = specs or variant_specs(kernels=kernels is not None)
    models = models or MODELS
    kinds = kinds if device.type == "cuda" else ("eager",)
    groups = [(short, batch, kind) for short in models for batch in batches for kind in kinds]
    deadline = time.perf_counter() + budget_s
    results, errors, skipped = [], [], []
    built: dict[str, dict] = {}
    for index, (short, batch, kind) in enumerate(groups):
        left = deadline - time.perf_counter()
        if left <= 0:
            skipped.append(f"{short} b{batch} {kind}")
            continue
        try:
            if short not in built:
                built.clear()
                built[short] = build_models(models[short], specs, device, dtype, kernels, **model_kwargs)
            variants = built[short]
            size = next(iter(variants.values())).patch_embed.img_size
            images = torch.randn(batch, 3, *size, device=device, dtype=dtype)
            with torch.inference_mode():
                rows, failed = time_group(variants, images, kind, 0.8 * left / (len(groups) - index))
        except Exception as error:  # a group that fails is a result; the others go on
            errors.append({"model": short, "batch": batch, "kind": kind, "error": f"{type(error).__name__}: {error}"})
            continue
        errors += [{"model": short, "batch": batch, "kind": kind, "variant": v, "error": e} for v, e in failed.items()]
        results += [{"model": short, "batch": batch, "kind": kind, **row} for row in rows]
        log(f"{short} b={batch} {kind}: " + ", ".join(f"{r['variant']} {r['speedup']:.2f}x" for r in rows))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    described = {
        name: {"config": s.config.to_dict() if s.config else None, "step": s.step} for name, s in specs.items()
    }
    return {"results": results, "errors": errors, "skipped": skipped, "variants": described}


def run_compiled_timings(
    device: torch.device,
    budget_s: float,
    models: dict[str, str] | None = None,
    batches=(1, 64),
    dtype: torch.dtype = torch.float16,
    log: Callable[[str], None] = print,
    **model_kwargs,
) -> dict:
    """``torch.compile``d unfused against ``torch.compile``d Triton-fused r=13 (default mode), eager calls (no
    graph capture; inductor's own launches), for each model and batch within ``budget_s`` (compilation included)."""
    specs = {"compiled unfused": VariantSpec(None), "compiled triton r=13": VariantSpec(FusionConfig(r=13), "triton")}
    deadline = time.perf_counter() + budget_s
    results, errors, skipped = [], [], []
    for short, name in (models or MODELS).items():
        for batch in batches:
            left = deadline - time.perf_counter()
            if left <= 0:
                skipped.append(f"{short} b{batch} compiled")
                continue
            try:
                built = build_models(name, specs, device, dtype, **model_kwargs)
                compiled = {variant: torch.compile(model, fullgraph=True) for variant, model in built.items()}
                size = built["compiled unfused"].patch_embed.img_size
                images = torch.randn(batch, 3, *size, device=device, dtype=dtype)
                with torch.inference_mode():
                    started = time.perf_counter()
                    for model in compiled.values():
                        model(images)  # compile outside the timing
                    compile_s = time.perf_counter() - started
                    rows, failed = time_group(compiled, images, "eager", min(20.0, max(2.0, left / 4)))
            except Exception as error:
                errors.append({"model": short, "batch": batch, "error": f"{type(error).__name__}: {error}"})
                continue
            errors += [{"model": short, "batch": batch, "variant": v, "error": e} for v, e in failed.items()]
            results += [{"model": short, "batch": batch, "compile_s": compile_s, **row} for row in rows]
            log(f"{short} b={batch} compiled: " + ", ".join(f"{r['variant']} {r['speedup']:.2f}x" for r in rows))
    return {"results": results, "errors": errors, "skipped": skipped}


@contextlib.contextmanager
def on_sms(num_sms: int) -> Iterator[None]:
    """Run the enclosed CUDA work on ``num_sms`` SMs only, through a green context (torch >= 2.10).

    torch's API changed between releases: where the green context hands out a stream (``Stream()``), work goes on
    it; where it is made current (``set_context``/``pop_context``), work follows the context.
    """
    from torch.cuda.green_contexts import GreenContext

    try:
        context = GreenContext.create(num_sms=num_sms, device_id=torch.cuda.current_device())
    except TypeError:
        context = GreenContext.create(num_sms, torch.cuda.current_device())
    if hasattr(context, "Stream"):
        with torch.cuda.stream(context.Stream()):
            yield
        return
    context.set_context()
    try:
        yield
    finally:
        context.pop_context()


def run_edge_proxy(
    device: torch.device,
    budget_s: float,
    sm_counts=(8, 16),
    batches=(1, 4, 16),
    models: dict[str, str] | None = None,
    dtype: torch.dtype = torch.float16,
    log: Callable[[str], None] = print,
) -> dict:
    """Unfused against Triton-fused r=13 (default mode) as CUDA graphs on a few SMs: an edge-GPU stand-in."""
    specs = {"unfused": VariantSpec(None), "triton r=13": VariantSpec(FusionConfig(r=13), "triton")}
    deadline = time.perf_counter() + budget_s
    results, errors, skipped = [], [], []
    groups = [(n, short, b) for n in sm_counts for short in (models or MODELS) for b in batches]
    built: dict[str, dict] = {}
    for index, (num_sms, short, batch) in enumerate(groups):
        left = deadline - time.perf_counter()
        if left <= 0:
            skipped.append(f"{num_sms} SMs {short} b{batch}")
            continue
        try:
            if short not in built:
                built.clear()
                built[short] = build_models((models or MODELS)[short], specs, device, dtype)
            size = built[short]["unfused"].patch_embed.img_size
            images = torch.randn(batch, 3, *size, device=device, dtype=dtype)
            with on_sms(num_sms), torch.inference_mode():
                rows, failed = time_group(built[short], images, "graph", 0.8 * left / (len(groups) - index))
        except Exception as error:
            errors.append({"sms": num_sms, "model": short, "batch": batch, "error": f"{type(error).__name__}: {error}"})
            continue
        errors += [
            {"sms": num_sms, "model": short, "batch": batch, "variant": v, "error": e} for v, e in failed.items()
        ]
        results += [{"sms": num_sms, "model": short, "batch": batch, **row} for row in rows]
        log(f"{num_sms} SMs {short} b={batch}: " + ", ".join(f"{r['variant']} {r['speedup']:.2f}x" for r in rows))
    return {
        "results": results,
        "errors": errors,
        "skipped": skipped,
        "not_modelled": "memory bandwidth and clocks stay the H200's (a Jetson Orin has 100-200 GB/s, not 4.8 TB/s)",
    }
