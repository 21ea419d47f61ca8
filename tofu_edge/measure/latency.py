"""Paired latency: runners called round-robin, one call each per round; `tofu_edge.stats.LatencyStats` summarises them.

Calling every runner once per round (rather than one runner many times, then the next) lets a drift in machine
speed (another job, thermal throttling, a clock change) hit every variant alike; speed-ups are then the median of
per-round ratios, which cancels most of that drift (benchmarks/README.md).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tofu_edge.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["Runner", "measure_interleaved", "paired_speedup", "torch_runner", "ort_runner", "engine_runner"]


@dataclass(frozen=True)
class Runner:
    """One thing to time: a name, a zero-argument call, and the images each call processes.

    Args:
        name: Variant name, unique within a measurement (``"unfused"``, ``"tofu r=13"``).
        call: Runs the model once. Returns the call's own device-timed latency in ms (CUDA events), or ``None``
            when the call is synchronous and the wall clock around it is the latency (CPU work, onnxruntime).
        batch: Images per call, for throughput.
    """

    name: str
    call: Callable[[], float | None]
    batch: int = 1


def measure_interleaved(
    runners: Sequence[Runner],
    *,
    warmup: int = 10,
    iterations: int | None = 50,
    seconds: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> dict[str, list[float]]:
    """Time ``runners`` round-robin, one call each per round, each round starting one runner later than the one
    before (``a b c``, ``b c a``, ``c a b``, ...), so no runner always follows the same one: what one call leaves
    behind (caches, freed memory) then falls on every runner alike.

    Args:
        runners: What to time; names must be unique.
        warmup: Untimed rounds first (each runner called ``warmup`` times, interleaved too).
        iterations: Timed rounds; ignored when ``seconds`` is given.
        seconds: Instead of a count: timed rounds until this wall-clock budget is spent (at least one round).
        progress: Called after every timed round with the fraction done (rounds, or time, in ``[0, 1]``).

    Returns:
        Runner name -> latency of each timed call in ms; every list has one entry per round, so entry ``i`` of
        two lists comes from the same round.

    Raises:
        ConfigError: no runners, duplicate names, ``warmup < 0``, neither a positive ``iterations`` nor
            positive ``seconds``.
    """
    names = [runner.name for runner in runners]
    if not runners or len(set(names)) != len(names):
        raise ConfigError(f"need runners with unique names, got {names}")
    if warmup < 0:
        raise ConfigError(f"warmup must be >= 0, got {warmup}")
    if seconds is not None and seconds <= 0:
        raise ConfigError(f"seconds must be > 0, got {seconds}")
    if seconds is None and (iterations is None or iterations < 1):
        raise ConfigError(f"iterations must be >= 1, got {iterations}")
    for _ in range(warmup):
        for runner in runners:
            runner.call()
    samples: dict[str, list[float]] = {name: [] for name in names}
    started = time.perf_counter()
    rounds = 0
    while True:
        start = rounds % len(runners)
        for runner in [*runners[start:], *runners[:start]]:
            begin = time.perf_counter()
            device_ms = runner.call()
            wall_ms = (time.perf_counter() - begin) * 1e3
            samples[runner.name].append(wall_ms if device_ms is None else float(device_ms))
        rounds += 1
        elapsed = time.perf_counter() - started
        done = min(1.0, elapsed / seconds) if seconds is not None else rounds / iterations
        if progress is not None:
            progress(done)
        if done >= 1.0:
            return samples


def paired_speedup(baseline_ms: Sequence[float], samples_ms: Sequence[float]) -> float:
    """Median over rounds of ``baseline / variant`` (each call against the baseline call of the same round).

    Raises:
        ValueError: the two lists differ in length or are empty.
    """
    if len(baseline_ms) != len(samples_ms) or not samples_ms:
        raise ValueError(f"need paired samples, got {len(baseline_ms)} and {len(samples_ms)}")
    return float(statistics.median(b / s for b, s in zip(baseline_ms, samples_ms, strict=True)))


def torch_runner(name: str, model: torch.nn.Module, images: torch.Tensor) -> Runner:
    """A runner for an eager PyTorch model on the images' device, under ``torch.inference_mode``.

    On CUDA each call is timed with two CUDA events on the current stream (synchronised on the end event), so
    the latency is GPU time rather than the launch time a bare wall clock would see.

    Shapes:
        images: [B, 3, H, W]
    """
    import torch

    if images.device.type != "cuda":

        def call_cpu() -> None:
            with torch.inference_mode():
                model(images)

        return Runner(name, call_cpu, images.shape[0])
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def call_cuda() -> float:
        with torch.inference_mode():
            start.record()
            model(images)
            end.record()
        end.synchronize()
        return start.elapsed_time(end)

    return Runner(name, call_cuda, images.shape[0])


def ort_runner(name: str, session: Any, inputs: np.ndarray | Mapping[str, np.ndarray]) -> Runner:
    """A runner for an onnxruntime session. ``session.run`` returns host arrays, so it is synchronous on every
    provider and the wall clock around it is the latency (copies included on a GPU provider).

    Args:
        name: The variant's name.
        session: An onnxruntime ``InferenceSession``.
        inputs: The images of a single-input model (cast to float32), or input name -> array for every input.

    Shapes:
        inputs: [B, 3, H, W], float32; or each input's own shape, the batch first
    """
    if isinstance(inputs, Mapping):
        feeds: Mapping[str, np.ndarray] = dict(inputs)
    else:
        feeds = {session.get_inputs()[0].name: inputs.astype(np.float32)}
    return Runner(name, lambda: session.run(None, feeds) and None, _batch(feeds))


def engine_runner(name: str, runner: Any, inputs: np.ndarray | Mapping[str, np.ndarray]) -> Runner:
    """A runner for a `tofu_edge.engine.EngineRunner`: each call copies in, executes and copies out on the
    engine's stream, timed with CUDA events (the latency a user of ``run`` sees).

    Shapes:
        inputs: the engine's input shape, e.g. [B, 3, H, W]; or input name -> array for every input
    """
    batch = _batch(inputs) if isinstance(inputs, Mapping) else inputs.shape[0]
    return Runner(name, lambda: runner.run(inputs).latency_ms, batch)


def _batch(feeds: Mapping[str, np.ndarray]) -> int:
    """The batch of a feed: the first axis of its first input (1 for a scalar input)."""
    first = next(iter(feeds.values()))
    return int(first.shape[0]) if first.ndim else 1
