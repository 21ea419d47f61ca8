"""The library's closed choices: `_Choice`, the one base of them all (a ``str`` enum that prints as its value; the
fusion's `tofu_edge.Mode`, `StepOp` and `Selection`, INT8's targets and recipes, the diffusion families build on it
too), the choices that have no module of their own (ONNX flavour, benchmark backend, device, onnxruntime provider,
calibration method, visualisation colours, tune's targets, diffusion destinations), and `parse_choice`, which turns a
user's value into one. The Python API and the CLI both go through it, so they refuse the same bad input with the
same message. Nothing here imports torch or a runtime.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from tofu_edge.errors import ConfigError

__all__ = [
    "parse_choice",
    "Flavor",
    "Backend",
    "Device",
    "OrtProvider",
    "CalibrationMethod",
    "GroupColours",
    "StepBackend",
    "TargetKind",
    "Destinations",
]

E = TypeVar("E", bound=Enum)


class _Choice(str, Enum):
    """A closed choice: a ``str`` enum whose members compare equal to, and print as, their values."""

    def __str__(self) -> str:
        return self.value


class Flavor(_Choice):
    """The two ONNX flavours of one fused model (docs/design.md, "Two ONNX flavours")."""

    PORTABLE = "portable"  # standard ops only: onnxruntime anywhere, TensorRT >= 8.5
    PLUGIN = "plugin"  # each fusion step as TofuMatch + TofuMerge nodes for the TensorRT plugins


class Backend(_Choice):
    """Where `tofu-edge bench` runs a model name: eager PyTorch, exported to onnxruntime, or built for TensorRT."""

    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"


class Device(_Choice):
    """The PyTorch device (for onnxruntime: the default provider)."""

    CPU = "cpu"
    CUDA = "cuda"


class OrtProvider(_Choice):
    """onnxruntime execution providers tofu-edge runs on."""

    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"

    @property
    def execution_provider(self) -> str:
        """onnxruntime's own name of the provider."""
        return _EXECUTION_PROVIDERS[self]


_EXECUTION_PROVIDERS = {
    OrtProvider.CPU: "CPUExecutionProvider",
    OrtProvider.CUDA: "CUDAExecutionProvider",
    OrtProvider.TENSORRT: "TensorrtExecutionProvider",
}


class CalibrationMethod(_Choice):
    """How `tofu-edge calibrate` chooses: end-to-end search over switches, or the per-block linearity probe."""

    SEARCH = "search"
    PROBE = "probe"
    PER_BLOCK = "per-block"


class StepBackend(_Choice):
    """Where a fused model's fusion steps run in PyTorch (`tofu_edge.patch.steps`)."""

    AUTO = "auto"  # Triton on CUDA where it runs, PyTorch ops elsewhere
    TORCH = "torch"  # the PyTorch ops (what the ONNX export traces)
    TRITON = "triton"  # the fused Triton kernels (torch custom ops)


class GroupColours(_Choice):
    """How `tofu-edge visualize` paints token groups: their mean colour (as ToMe draws it) or a random one."""

    AVERAGE = "average"
    RANDOM = "random"


class TargetKind(_Choice):
    """What `tofu-edge tune` is asked for: ``speedup`` and ``latency-ms`` ask for speed and rank by fidelity;
    ``min-cosine`` and ``max-top1-drop`` ask for fidelity and rank by speed."""

    SPEEDUP = "speedup"
    LATENCY_MS = "latency-ms"
    MIN_COSINE = "min-cosine"
    MAX_TOP1_DROP = "max-top1-drop"


class Destinations(_Choice):
    """Which token of every ``sy x sx`` cell of the latent grid is the destination (B) set's member.

    ``cycle``: the offset inside the cell is ``(cell_row * sx + cell_col + module_index) mod (sx * sy)``, a fixed
    dither that also moves from one fused module to the next, so no grid position is a destination everywhere
    (tomesd draws a random one per call instead, which a static graph cannot). ``corner``: always the cell's
    top-left token (tomesd's ``use_rand=False``).
    """

    CYCLE = "cycle"
    CORNER = "corner"


def parse_choice(kind: type[E], value: E | str, what: str) -> E:
    """``value`` as a member of the enum ``kind``.

    Args:
        kind: A ``str`` enum.
        value: A member, or its string value.
        what: The option's name, for the message (``"mode"``, ``"backend"``).

    Raises:
        ConfigError: ``value`` is not one of the choices (they are listed).
    """
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(member.value) for member in kind)
        raise ConfigError(f"unknown {what} {value!r}; choose one of {choices}") from None
