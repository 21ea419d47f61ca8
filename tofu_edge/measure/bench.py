"""`bench_model` / `bench_files`: fused and unfused variants of one model timed side by side in one run.

A model name becomes the unfused baseline plus each fused variant, in the chosen backend (eager PyTorch, an
exported ONNX file in onnxruntime, or a TensorRT engine built from it); existing ``.onnx`` / ``.engine`` files are
timed as they are, optionally beside a baseline file. All runners are then timed round-robin
(`measure_interleaved`) and each row gets its statistics, GMACs and the paired speed-up against the first runner.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tofu_edge.config import FusionConfig
from tofu_edge.errors import ConfigError, MissingDependencyError
from tofu_edge.measure.environment import TegrastatsSampler, describe_environment
from tofu_edge.measure.latency import (
    ORT_PROVIDERS,
    LatencyStats,
    Runner,
    engine_runner,
    measure_interleaved,
    ort_runner,
    ort_session,
    paired_speedup,
    torch_runner,
)

__all__ = ["Variant", "BenchResult", "Timing", "bench_model", "bench_files", "parse_sweep", "BACKENDS"]

BACKENDS = ("torch", "onnxruntime", "tensorrt")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
SEED = 0

Progress = Callable[[str, float], None]  # (phase, fraction done)


@dataclass(frozen=True)
class Variant:
    """One model variant: a name and its fusion (``None``: the plain, unfused timm model)."""

    name: str
    config: FusionConfig | None = None


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


def parse_sweep(text: str, base: FusionConfig) -> list[Variant]:
    """``"r=0,8,13"`` or ``"keep=0.8,0.6"`` into variants built on ``base`` (mode, switch, clamp, ...).

    ``r=0`` and ``keep=1`` are the unfused model; the unfused baseline is put first whether listed or not.

    Raises:
        ConfigError: not ``r=`` or ``keep=`` followed by a comma list of numbers.
    """
    key, sep, values = text.partition("=")
    key = key.strip()
    try:
        numbers = [int(v) if key == "r" else float(v) for v in values.split(",")] if sep else []
    except ValueError:
        numbers = []
    if key not in ("r", "keep") or not numbers:
        raise ConfigError(f"--sweep takes r=INT,INT,... or keep=FRACTION,FRACTION,..., got {text!r}")
    variants = [Variant("unfused")]
    for number in dict.fromkeys(numbers):  # drop repeats, keep the order given
        if (key == "r" and number == 0) or (key == "keep" and number == 1.0):
            continue  # the unfused model, already first
        if key == "r":
            config = dataclasses.replace(base, r=number, keep=None)
        else:
            config = dataclasses.replace(base, r=0, keep=number, inflection=0.0)
        variants.append(Variant(f"{base.mode.value} {key}={number}", config))
    return variants


def bench_model(
    model: str,
    variants: Sequence[Variant],
    *,
    backend: str = "torch",
    device: str = "cpu",
    ort_provider: str | None = None,
    batch: int = 1,
    img_size: int | None = None,
    checkpoint: str | Path | None = None,
    fp16: bool = False,
    timing: Timing | None = None,
    progress: Progress | None = None,
) -> BenchResult:
    """Time every variant of a timm model in one backend, interleaved, the first variant being the baseline.

    Args:
        model: timm model name.
        variants: What to time; the first is the baseline of the speed-ups.
        backend: ``torch`` (eager), ``onnxruntime`` (each variant exported with `export_onnx`, parity checked) or
            ``tensorrt`` (exported, then built with `build_engine`, run with `EngineRunner`).
        device: ``cpu`` or ``cuda`` (torch; for onnxruntime the default provider).
        ort_provider: ``cpu``, ``cuda`` or ``tensorrt`` execution provider (default: from ``device``).
        batch: Images per call.
        img_size: Square input size (default: the model's own).
        checkpoint: Weights to load first.
        fp16: TensorRT: allow fp16 kernels. Other backends run fp32.
        timing: Warm-up, iterations or seconds, threads, onnxruntime spinning.
        progress: Called with a phase name and its fraction done.

    Raises:
        TofuError: bad input (model, schedule, checkpoint), a backend or device not installed (exit code 2), or a
            failed parity check of an export (exit code 1).
    """
    from tofu_edge.checkpoint import load_checkpoint
    from tofu_edge.models import create_model
    from tofu_edge.patch import describe_vit
    from tofu_edge.plan import resolve_plan

    timing = timing or Timing()
    provider = _check_backend(backend, device, ort_provider, fp16, batch)
    base = create_model(model, img_size=img_size)
    if checkpoint is not None:
        load_checkpoint(base, checkpoint)
    arch = describe_vit(base)
    plans = {v.name: resolve_plan(v.config or FusionConfig(), arch) for v in variants}  # fails early on bad r
    images = torch.randn(batch, 3, *base.patch_embed.img_size, generator=torch.Generator().manual_seed(SEED))
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tofu-bench-")))
        runners = []
        for index, variant in enumerate(variants):
            _report(progress, "prepare", index / len(variants))
            runners.append(_model_runner(variant, base, images, backend, device, provider, folder, fp16, timing, stack))
        _report(progress, "prepare", 1.0)
        rows, power = _measure(runners, timing, progress)
    for row, variant in zip(rows, variants, strict=True):
        plan = plans[variant.name]
        row.update(
            config=None if variant.config is None else variant.config.to_dict(),
            r_schedule=list(plan.r_schedule),
            gmacs=plan.macs / 1e9,
            unfused_gmacs=plan.unfused_macs / 1e9,
            ideal_speedup=plan.unfused_macs / plan.macs,
        )
    header = _header(model, backend, device, provider, batch, "fp16" if fp16 else "fp32", timing, power)
    header["input_shape"] = list(images.shape)
    return BenchResult(header, [{"variant": row["variant"], "backend": backend, "batch": batch, **row} for row in rows])


def bench_files(
    path: str | Path,
    *,
    baseline: str | Path | None = None,
    device: str = "cpu",
    ort_provider: str | None = None,
    batch: int = 1,
    timing: Timing | None = None,
    plugins: Sequence[str | Path] = (),
    progress: Progress | None = None,
) -> BenchResult:
    """Time an ``.onnx`` file (onnxruntime) or a TensorRT engine as it is, with ``baseline`` beside it when given.

    GMACs and the schedule come from the ``tofu_edge.plan`` metadata of files tofu-edge wrote (the engine's
    sidecar); the batch is the file's static batch, or ``batch`` for a dynamic one.

    Raises:
        TofuError: a missing or unreadable file, mixed file kinds, a backend not installed (exit code 2).
    """
    timing = timing or Timing()
    paths = [Path(p) for p in ([baseline] if baseline is not None else []) + [path]]
    kinds = {"tensorrt" if p.suffix in ENGINE_SUFFIXES else "onnxruntime" for p in paths}
    for p in paths:
        if not p.is_file():
            raise ConfigError(f"{p} does not exist" if not p.is_dir() else f"{p} is a folder, not a model file")
        if p.suffix not in (".onnx", *ENGINE_SUFFIXES):
            raise ConfigError(f"{p}: expected an .onnx file or a TensorRT engine ({', '.join(ENGINE_SUFFIXES)})")
    if len(kinds) > 1:
        raise ConfigError("the file and --baseline must be the same kind (both .onnx or both engines)")
    backend = kinds.pop()
    provider = _check_backend(backend, device, ort_provider, False, batch)
    names = [p.stem if p.stem not in [q.stem for q in paths if q is not p] else str(p) for p in paths]
    with contextlib.ExitStack() as stack:
        runners, metas = [], []
        for name, p in zip(names, paths, strict=True):
            runner, meta = _file_runner(name, p, backend, provider, batch, timing, plugins, stack)
            runners.append(runner)
            metas.append(meta)
        rows, power = _measure(runners, timing, progress)
    precision = {m.get("precision", "fp32") for m in metas}
    header = _header(
        str(path), backend, device, provider, runners[-1].batch, "/".join(sorted(precision)), timing, power
    )
    header["files"] = [str(p) for p in paths]
    out = []
    for row, p, meta in zip(rows, paths, metas, strict=True):
        plan = meta.get("plan") or {}
        gmacs, unfused = plan.get("gmacs"), plan.get("unfused_gmacs")
        out.append(
            {
                "variant": row["variant"],
                "backend": backend,
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


def _check_backend(backend: str, device: str, ort_provider: str | None, fp16: bool, batch: int) -> str | None:
    """Validate the options and that the backend is installed, before any slow work; the onnxruntime provider."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; choose cpu or cuda")
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    if fp16 and backend != "tensorrt":
        raise ConfigError("--fp16 applies to TensorRT engines; torch and onnxruntime run fp32 here")
    if backend == "torch" and device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch sees no CUDA device (or this torch build has no CUDA)")
    if backend == "tensorrt":
        from tofu_edge.engine.backend import import_cudart, import_tensorrt

        import_tensorrt()
        import_cudart()
        return None
    if backend == "onnxruntime":
        provider = ort_provider or ("cuda" if device == "cuda" else "cpu")
        if provider not in ORT_PROVIDERS:
            raise ConfigError(f"unknown onnxruntime provider {provider!r}; choose one of {', '.join(ORT_PROVIDERS)}")
        import onnxruntime as ort

        if ORT_PROVIDERS[provider] not in ort.get_available_providers():
            raise MissingDependencyError(
                f"onnxruntime {ort.__version__} has no {ORT_PROVIDERS[provider]} (available: "
                f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu, or use --ort-provider cpu"
            )
        return provider
    return None


def _model_runner(variant, base, images, backend, device, provider, folder, fp16, timing, stack) -> Runner:
    """The variant's runner: the (fused copy of the) model in eager PyTorch, or exported (and built) first."""
    if backend == "torch":
        from tofu_edge.patch import fuse

        module = base if variant.config is None else fuse(copy.deepcopy(base), variant.config)
        return torch_runner(variant.name, module.to(device), images.to(device))
    from tofu_edge.export import export_onnx

    stem = "".join(c if c.isalnum() else "_" for c in variant.name)
    onnx_path = folder / f"{stem}.onnx"
    export_onnx(base, onnx_path, variant.config, batch=images.shape[0])  # fuses a copy; parity checked
    if backend == "onnxruntime":
        session = ort_session(onnx_path, provider=provider, threads=timing.threads, spinning=timing.ort_spinning)
        return ort_runner(variant.name, session, images.numpy())
    from tofu_edge.engine import EngineRunner, build_engine

    engine_path = folder / f"{stem}.engine"
    build_engine(onnx_path, engine_path, fp16=fp16)
    engine = stack.enter_context(EngineRunner(engine_path))
    return engine_runner(variant.name, engine, images.numpy())


def _file_runner(name, path, backend, provider, batch, timing, plugins, stack) -> tuple[Runner, dict]:
    generator = np.random.default_rng(SEED)
    if backend == "onnxruntime":
        from tofu_edge.engine.sidecar import inspect_onnx

        info = inspect_onnx(path)
        shape = [batch if d < 0 else d for d in info.inputs[0].shape]
        session = ort_session(path, provider=provider, threads=timing.threads, spinning=timing.ort_spinning)
        images = generator.standard_normal(shape, dtype=np.float32)
        return ort_runner(name, session, images), {"plan": info.metadata.get("plan"), "batch": shape[0]}
    from tofu_edge.engine import EngineRunner

    engine = stack.enter_context(EngineRunner(path, plugins=list(plugins) or None))
    shape = [batch if d < 0 else d for d in engine.inputs[0].shape]
    sidecar = engine.sidecar or {}
    meta = {"plan": sidecar.get("onnx", {}).get("metadata", {}).get("plan"), "batch": shape[0]}
    if "precision" in sidecar:
        meta["precision"] = sidecar["precision"]
    return engine_runner(name, engine, generator.standard_normal(shape, dtype=np.float32)), meta


def _measure(runners: list[Runner], timing: Timing, progress: Progress | None) -> tuple[list[dict], dict | None]:
    """Time the runners (torch threads as asked) with tegrastats sampling; rows with stats and speed-ups."""
    threads = torch.get_num_threads()
    if timing.threads is not None:
        torch.set_num_threads(timing.threads)
    try:
        with TegrastatsSampler() as power:
            samples = measure_interleaved(
                runners,
                warmup=timing.warmup,
                iterations=timing.iterations,
                seconds=timing.seconds,
                progress=None if progress is None else lambda done: progress("measure", done),
            )
    finally:
        torch.set_num_threads(threads)
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
        **describe_environment(threads=timing.threads, device=device),
        "model": model,
        "backend": backend,
        "ort_provider": provider,
        "batch": batch,
        "precision": precision,
        "timing": dataclasses.asdict(timing),
        "power": power,
    }


def _report(progress: Progress | None, phase: str, done: float) -> None:
    if progress is not None:
        progress(phase, done)
