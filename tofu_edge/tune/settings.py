"""`TuneSettings`: where and how `tofu-edge tune` times its candidates, and its budget."""

from __future__ import annotations

from dataclasses import dataclass

from tofu_edge.choices import Backend, Device, parse_choice
from tofu_edge.errors import ConfigError

__all__ = ["TuneSettings"]


@dataclass(frozen=True)
class TuneSettings:
    """Where and how to tune.

    Args:
        backend: ``onnxruntime``, ``torch`` or ``tensorrt``.
        device: ``cpu`` or ``cuda`` (torch; onnxruntime's provider).
        batch: Images per call of the timed model.
        threads: Intra-op threads (``None``: the runtime's default).
        compile: torch: time ``torch.compile``d models.
        int8: onnxruntime: INT8 Linear layers as one more axis.
        budget_s: Wall-clock budget of the whole search.
        measure_s: Seconds of each interleaved timing run (``None``: 2 % of the budget, 0.5 to 10 s).
    """

    backend: Backend = Backend.ONNXRUNTIME
    device: Device = Device.CPU
    batch: int = 1
    threads: int | None = None
    compile: bool = False
    int8: bool = False
    budget_s: float = 600.0
    measure_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", parse_choice(Backend, self.backend, "backend"))
        object.__setattr__(self, "device", parse_choice(Device, self.device, "device"))
        if self.budget_s <= 0:
            raise ConfigError(f"--budget-min must be > 0, got {self.budget_s / 60:g}")
        if self.int8 and self.backend is not Backend.ONNXRUNTIME:
            raise ConfigError("--int8 is an axis of the onnxruntime backend (INT8 engines: export --int8, then build)")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")

    def check_backend(self) -> None:
        """Fail before any work when the backend or device is not installed.

        Raises:
            TofuError: TensorRT, onnxruntime's provider or torch's CUDA is missing.
        """
        from tofu_edge.measure.variant_runners import check_backend

        check_backend(self.backend, self.device, None, False, self.batch)

    @property
    def timing_seconds(self) -> float:
        return self.measure_s if self.measure_s is not None else min(10.0, max(0.5, 0.02 * self.budget_s))

    def context(self) -> dict:
        """What measurements depend on, for the cache."""
        return {
            "backend": self.backend.value,
            "device": self.device.value,
            "batch": self.batch,
            "threads": self.threads,
            "compile": self.compile,
        }
