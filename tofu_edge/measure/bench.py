"""`bench_model` / `bench_files`: fused and unfused variants of one model timed side by side in one run.

A model name becomes the unfused baseline plus each fused variant, in the chosen backend (eager or compiled
PyTorch, an exported ONNX file in onnxruntime, or a TensorRT engine built from it); existing ``.onnx`` / ``.engine``
files are timed as they are, optionally beside a baseline file. All runners are then timed round-robin
(`measure_interleaved`) and each row gets its statistics, GMACs and the paired speed-up against the first runner.

Timing files needs no torch (a device install); timing a model name does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tofu_edge.choices import Backend, Device, OrtProvider, StepBackend, parse_choice
from tofu_edge.config import FusionConfig
from tofu_edge.errors import ConfigError
from tofu_edge.measure.environment import TegrastatsSampler, describe_environment, torch_threads
from tofu_edge.measure.latency import Runner, measure_interleaved, paired_speedup
from tofu_edge.measure.variant_runners import SEED, RunnerSetup, check_backend, file_runner, model_runner
from tofu_edge.measure.variants import Variant
from tofu_edge.stats import LatencyStats

__all__ = ["BenchResult", "Timing", "bench_model", "bench_files", "ENGINE_SUFFIXES"]

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")

Progress = Callable[[str, float], None]  # (phase, fraction done)


@dataclass(frozen=True)
class Timing:
    """How to time: warm-up rounds, then timed rounds or a time budget; threads and onnxruntime spinning."""

    warmup: int = 10
    iterations: int | None = 50
    seconds: float | None = None
    threads: int | None = None
    ort_spinning: bool = False


@dataclass(frozen=True)
class BenchResult:
    """A header (environment, model, backend, batch, timing) and one row per variant, first row the baseline."""

    header: dict
    rows: list[dict]

    def to_jsonl(self) -> str:
        """The header line, then one line per variant."""
        lines = [{"type": "environment", **self.header}] + [{"type": "result", **row} for row in self.rows]
        return "".join(json.dumps(line) + "\n" for line in lines)


def bench_model(
    model: str,
    variants: Sequence[Variant],
    *,
    backend: Backend | str = Backend.TORCH,
    device: Device | str = Device.CPU,
    ort_provider: OrtProvider | str | None = None,
    batch: int = 1,
    img_size: int | None = None,
    checkpoint: str | Path | None = None,
    fp16: bool = False,
    compile: bool = False,
    step: StepBackend | str = StepBackend.AUTO,
    timing: Timing | None = None,
    progress: Progress | None = None,
) -> BenchResult:
    """Time every variant of a timm model in one backend, interleaved, the first variant being the baseline.

    Args:
        model: timm model name.
        variants: What to time; the first is the baseline of the speed-ups.
        backend: ``torch`` (eager, or ``torch.compile`` with ``compile``), ``onnxruntime`` (each variant exported
            with `export_onnx`, parity checked) or ``tensorrt`` (exported, built with `build_engine`, run with
            `EngineRunner`).
        device: ``cpu`` or ``cuda`` (torch; for onnxruntime the default provider).
        ort_provider: ``cpu``, ``cuda`` or ``tensorrt`` execution provider (default: from ``device``).
        batch: Images per call.
        img_size: Square input size (default: the model's own).
        checkpoint: Weights to load first.
        fp16: TensorRT: allow fp16 kernels. Other backends run fp32.
        compile: torch: time every variant (the baseline too) after ``torch.compile``; the warm-up rounds
            absorb the compilation.
        step: torch: where the fused variants' fusion steps run (``auto``: the Triton kernels on CUDA where Triton
            runs, the PyTorch ops elsewhere; ``torch``; ``triton``).
        timing: Warm-up, iterations or seconds, threads, onnxruntime spinning.
        progress: Called with a phase name and its fraction done.

    Raises:
        TofuError: bad input (model, schedule, checkpoint, choice), a backend or device not installed (exit code 2),
            or a failed parity check of an export (exit code 1).
    """
    import torch

    from tofu_edge.checkpoint import load_checkpoint
    from tofu_edge.models import create_model, input_shape
    from tofu_edge.patch import describe_vit
    from tofu_edge.plan import resolve_plan

    timing = timing or Timing()
    backend, device = parse_choice(Backend, backend, "backend"), parse_choice(Device, device, "device")
    if compile and backend is not Backend.TORCH:
        raise ConfigError("--compile applies to the torch backend (onnxruntime and TensorRT compile their own graphs)")
    step = parse_choice(StepBackend, step, "fusion step")
    if step is not StepBackend.AUTO and backend is not Backend.TORCH:
        raise ConfigError("--step applies to the torch backend (exports run the PyTorch ops' graph)")
    provider = check_backend(backend, device, ort_provider, fp16, batch)
    base = create_model(model, img_size=img_size)
    if checkpoint is not None:
        load_checkpoint(base, checkpoint)
    arch = describe_vit(base)
    plans = {v.name: resolve_plan(v.config, arch) for v in variants if v.config is not None}  # fails early on bad r
    unfused_macs = resolve_plan(FusionConfig(), arch).unfused_macs
    images = torch.randn(batch, *input_shape(base), generator=torch.Generator().manual_seed(SEED))
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tofu-bench-")))
        setup = RunnerSetup(backend, device, provider, folder, timing, stack, fp16=fp16, compile=compile, step=step)
        runners = []
        for index, variant in enumerate(variants):
            _report(progress, "prepare", index / len(variants))
            runners.append(model_runner(variant, base, images, setup))
        _report(progress, "prepare", 1.0)
        rows, power = _measure(runners, timing, progress)
    for row, variant in zip(rows, variants, strict=True):
        plan = plans.get(variant.name)
        macs = plan.macs if plan is not None else unfused_macs
        row.update(
            config=None if variant.config is None else variant.config.to_dict(),
            r_schedule=list(plan.r_schedule) if plan is not None else [0] * arch.num_blocks,
            gmacs=macs / 1e9,
            unfused_gmacs=unfused_macs / 1e9,
            ideal_speedup=unfused_macs / macs,
        )
    precision = "fp16" if fp16 else "fp32"
    header = _header(model, backend, device, provider, batch, precision, timing, power)
    header.update(input_shape=list(images.shape), compiled=compile, fusion_step=step.value)
    return BenchResult(
        header, [{"variant": row["variant"], "backend": backend.value, "batch": batch, **row} for row in rows]
    )


def bench_files(
    path: str | Path,
    *,
    baseline: str | Path | None = None,
    device: Device | str = Device.CPU,
    ort_provider: OrtProvider | str | None = None,
    batch: int = 1,
    timing: Timing | None = None,
    plugins: Sequence[str | Path] = (),
    progress: Progress | None = None,
) -> BenchResult:
    """Time an ``.onnx`` file (onnxruntime) or a TensorRT engine as it is, with ``baseline`` beside it when given.

    GMACs and the schedule come from the ``tofu_edge.plan`` metadata of files tofu-edge wrote (the engine's
    sidecar); the batch is the file's static batch, or ``batch`` for a dynamic one. Needs no torch.

    Raises:
        TofuError: a missing or unreadable file, mixed file kinds, a backend not installed (exit code 2).
    """
    timing = timing or Timing()
    device = parse_choice(Device, device, "device")
    paths = [Path(p) for p in ([baseline] if baseline is not None else []) + [path]]
    for p in paths:
        if not p.is_file():
            raise ConfigError(f"{p} does not exist" if not p.is_dir() else f"{p} is a folder, not a model file")
        if p.suffix not in (".onnx", *ENGINE_SUFFIXES):
            raise ConfigError(f"{p}: expected an .onnx file or a TensorRT engine ({', '.join(ENGINE_SUFFIXES)})")
    kinds = {Backend.TENSORRT if p.suffix in ENGINE_SUFFIXES else Backend.ONNXRUNTIME for p in paths}
    if len(kinds) > 1:
        raise ConfigError("the file and --baseline must be the same kind (both .onnx or both engines)")
    backend = kinds.pop()
    provider = check_backend(backend, device, ort_provider, False, batch)
    names = [p.stem if p.stem not in [q.stem for q in paths if q is not p] else str(p) for p in paths]
    with contextlib.ExitStack() as stack:
        runners, metas = [], []
        for name, p in zip(names, paths, strict=True):
            runner, meta = file_runner(name, p, backend, provider, batch, timing, plugins, stack)
            runners.append(runner)
            metas.append(meta)
        rows, power = _measure(runners, timing, progress)
    precision = "/".join(sorted({m.get("precision", "fp32") for m in metas}))
    header = _header(str(path), backend, device, provider, runners[-1].batch, precision, timing, power)
    header["files"] = [str(p) for p in paths]
    out = []
    for row, p, meta in zip(rows, paths, metas, strict=True):
        plan = meta.get("plan") or {}
        gmacs, unfused = plan.get("gmacs"), plan.get("unfused_gmacs")
        out.append(
            {
                "variant": row["variant"],
                "backend": backend.value,
                "batch": meta["batch"],
                "file": str(p),
                **row,
                "config": (plan.get("config") if plan else None),
                "r_schedule": [b["r"] for b in plan.get("blocks", [])] or None,
                "gmacs": gmacs,
                "unfused_gmacs": unfused,
                "ideal_speedup": unfused / gmacs if gmacs and unfused else None,
            }
        )
    if baseline is None:
        out[0]["speedup"] = None
    return BenchResult(header, out)


def _measure(runners: list[Runner], timing: Timing, progress: Progress | None) -> tuple[list[dict], dict | None]:
    """Time the runners (torch threads as asked) with tegrastats sampling; rows with stats and speed-ups."""
    with torch_threads(timing.threads), TegrastatsSampler() as power:
        samples = measure_interleaved(
            runners,
            warmup=timing.warmup,
            iterations=timing.iterations,
            seconds=timing.seconds,
            progress=None if progress is None else lambda done: progress("measure", done),
        )
    baseline = samples[runners[0].name]
    rows = []
    for runner in runners:
        times = samples[runner.name]
        rows.append(
            {
                "variant": runner.name,
                "stats": LatencyStats.from_samples(times, runner.batch).to_dict(),
                "speedup": paired_speedup(baseline, times),
            }
        )
    return rows, power.summary()


def _header(model, backend, device, provider, batch, precision, timing: Timing, power) -> dict:
    return {
        **describe_environment(threads=timing.threads, device=device.value),
        "model": model,
        "backend": backend.value,
        "ort_provider": None if provider is None else provider.value,
        "batch": batch,
        "precision": precision,
        "timing": dataclasses.asdict(timing),
        "power": power,
    }


def _report(progress: Progress | None, phase: str, done: float) -> None:
    if progress is not None:
        progress(phase, done)
