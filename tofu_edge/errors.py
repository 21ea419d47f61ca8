"""The exceptions tofu-edge raises for bad input; the CLI prints them as one line."""

from __future__ import annotations

__all__ = [
    "TofuError",
    "ConfigError",
    "ScheduleError",
    "UnsupportedModelError",
    "UnknownModelError",
    "InputShapeError",
    "OutputError",
    "DiskFullError",
    "CheckpointError",
    "ExportError",
    "ParityError",
    "MissingDependencyError",
]


class TofuError(Exception):
    """Base class of every error tofu-edge raises on purpose (bad input, failed checks)."""

    exit_code: int = 2


class ConfigError(TofuError, ValueError):
    """A fusion option is malformed (unknown mode, negative r, conflicting options)."""


class ScheduleError(TofuError, ValueError):
    """A token schedule cannot be carried out on the model (names the block and the limit)."""


class UnsupportedModelError(TofuError, TypeError):
    """The model is not one of the ViT families that fusion supports."""


class UnknownModelError(TofuError, KeyError):
    """No timm model has the requested name."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class InputShapeError(TofuError, ValueError):
    """An input tensor does not have the shape the (statically planned) model was fused for."""


class OutputError(TofuError, OSError):
    """An output path cannot be written."""


class DiskFullError(OutputError):
    """A write failed part-way for want of space (or past the file size limit); nothing was left behind, and the
    command was right, so it exits 1 like a failed check rather than 2 like bad input."""

    exit_code = 1


class CheckpointError(TofuError, ValueError):
    """A checkpoint is missing, corrupt, unsafe to load, or does not fit the model."""


class ExportError(TofuError, RuntimeError):
    """The exporter could not produce a valid graph (e.g. an opset the graph cannot use)."""


class ParityError(TofuError, AssertionError):
    """The exported model's outputs are out of tolerance against PyTorch (a failed check: exit code 1)."""

    exit_code = 1


class MissingDependencyError(TofuError, ImportError):
    """An optional package (TensorRT, a runtime) is needed and not installed; the message says how."""
