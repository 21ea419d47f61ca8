"""`LatencyLab`: candidates prepared on one backend (fused, exported, built) and timed against the unfused model.

Every measurement runs the unfused model and the new candidates round-robin in this process
(`tofu_edge.measure.measure_interleaved`) and reports each candidate's paired speed-up (the median over rounds of
unfused / candidate), so machine drift cancels as it does in ``bench``.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tofu_edge.batches import run_in_batches
from tofu_edge.choices import Backend, Device, parse_choice
from tofu_edge.errors import ConfigError
from tofu_edge.measure.bench import Timing
from tofu_edge.measure.environment import torch_threads
from tofu_edge.measure.latency import Runner, measure_interleaved, ort_runner, paired_speedup
from tofu_edge.measure.variant_runners import SEED, RunnerSetup, check_backend, model_runner
from tofu_edge.measure.variants import Variant
from tofu_edge.models import input_shape
from tofu_edge.tune.candidates import Candidate

__all__ = ["LatencyLab", "Measurement"]

WARMUP_ROUNDS = 3


@dataclass(frozen=True)
class Measurement:
    """One candidate timed against the unfused model in one interleaved run."""

    speedup: float
    latency_ms: float
    unfused_ms: float
    rounds: int

    def to_dict(self) -> dict:
        return {
            "speedup": self.speedup,
            "latency_ms": self.latency_ms,
            "unfused_ms": self.unfused_ms,
            "rounds": self.rounds,
        }


class LatencyLab:
    """Prepares and times candidates of one model on one backend.

    Args:
        model: The unfused timm ViT (not changed: candidates fuse copies).
        backend: ``onnxruntime`` (each candidate exported with its parity check), ``torch`` (eager, or
            ``torch.compile`` with ``compile``) or ``tensorrt`` (exported and built).
        device: ``cpu`` or ``cuda``.
        batch: Images per call.
        threads: Intra-op threads (torch and onnxruntime).
        compile: torch: compile every variant, the unfused one too.

    Raises:
        TofuError: the backend or device is not installed, or INT8 asked of another backend than onnxruntime.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        backend: Backend | str,
        device: Device | str,
        batch: int,
        threads: int | None,
        compile: bool = False,
    ) -> None:
        backend, device = parse_choice(Backend, backend, "backend"), parse_choice(Device, device, "device")
        if compile and backend is not Backend.TORCH:
            raise ConfigError("--compile applies to the torch backend")
        self._provider = check_backend(backend, device, None, False, batch)
        self._model, self._backend, self._device, self._compile = model, backend, device, compile
        self._timing = Timing(threads=threads)
        shape = (batch, *input_shape(model))
        self._images = torch.randn(shape, generator=torch.Generator().manual_seed(SEED))
        self._stack = contextlib.ExitStack()
        self._folder = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="tofu-tune-")))
        self._setup = RunnerSetup(
            backend, device, self._provider, self._folder, self._timing, self._stack, compile=compile
        )
        self._runners: dict[str, Runner] = {}
        self._sessions: dict[str, object] = {}
        self.prepare_seconds: list[float] = []  # what preparing each candidate took: the search plans with it

    def __enter__(self) -> LatencyLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def backend(self) -> Backend:
        return self._backend

    def prepare(self, candidate: Candidate) -> None:
        """Fuse, export or build the candidate's runner once (timed into `prepare_seconds`).

        Raises:
            ParityError: an export's parity check failed.
        """
        if candidate.key in self._runners:
            return
        started = time.perf_counter()
        if candidate.int8:
            self._runners[candidate.key] = self._int8_runner(candidate)
        else:
            variant = Variant(candidate.name, candidate.config)
            self._runners[candidate.key] = model_runner(variant, self._model, self._images, self._setup)
        self.prepare_seconds.append(time.perf_counter() - started)

    def measure(self, unfused: Candidate, candidates: Sequence[Candidate], seconds: float) -> dict[str, Measurement]:
        """Time the unfused model and ``candidates`` round-robin for ``seconds``; each candidate's measurement.

        Returns:
            Candidate key -> its measurement.
        """
        self.prepare(unfused)
        for candidate in candidates:
            self.prepare(candidate)
        runners = [self._runners[unfused.key]] + [self._runners[c.key] for c in candidates]
        named = [Runner(f"{i}", runner.call, runner.batch) for i, runner in enumerate(runners)]  # names may repeat
        with torch_threads(self._timing.threads):
            samples = measure_interleaved(named, warmup=WARMUP_ROUNDS, iterations=None, seconds=seconds)
        baseline = samples["0"]
        return {
            candidate.key: Measurement(
                speedup=paired_speedup(baseline, samples[f"{i}"]),
                latency_ms=float(np.median(samples[f"{i}"])),
                unfused_ms=float(np.median(baseline)),
                rounds=len(baseline),
            )
            for i, candidate in enumerate(candidates, start=1)
        }

    def outputs(self, candidate: Candidate, images: torch.Tensor) -> np.ndarray:
        """An INT8 candidate's outputs for ``images`` from its onnxruntime session, in chunks of its batch.

        Shapes:
            images: [N, 3, H, W]
            returns: [N, ...]
        """
        self.prepare(candidate)
        session = self._sessions[candidate.key]
        name = session.get_inputs()[0].name
        run = lambda chunk: session.run(None, {name: chunk})[0]  # noqa: E731
        return run_in_batches(run, images.numpy().astype(np.float32), self._images.shape[0])

    def _int8_runner(self, candidate: Candidate) -> Runner:
        from tofu_edge.export import Int8Config, export_onnx, ort_session

        if self._backend is not Backend.ONNXRUNTIME:
            raise ConfigError("--int8 is an axis of the onnxruntime backend (INT8 engines: export --int8, then build)")
        path = self._folder / f"int8_{len(self._sessions)}.onnx"
        export_onnx(self._model, path, candidate.config, batch=self._images.shape[0], int8=Int8Config())
        session = ort_session(path, provider=self._provider, threads=self._timing.threads)
        self._sessions[candidate.key] = session
        return ort_runner(candidate.name, session, self._images.numpy())
