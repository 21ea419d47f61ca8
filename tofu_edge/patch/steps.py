"""Where a fused block's fusion step runs: PyTorch ops, fused Triton kernels, or another backend a caller brings.

A fusion step is one callable, `FusionStep`: ``(x, size, metric, num_prefix, r, op) -> (x, size, match)``. Every
`FusedBlock` calls the step its ``tofu_fusion`` attribute names (`FusedBlock.fusion_step`, after its own ``r == 0``
guard); `use_step` sets it for a whole model. The backends:

- ``auto`` (the default): the Triton step on CUDA tensors where Triton runs there, the PyTorch ops everywhere else
  (CPUs, ONNX export, machines without Triton). The choice is made from the tensors' device, a Python fact, so it
  costs nothing under ``torch.compile`` and CUDA graphs.
- ``torch``: `match_tokens` + `fuse_tokens`, the reference-tested PyTorch ops (about 50 small kernels on a GPU).
- ``triton``: `tofu_edge.ops.triton_step`, the scores as one matmul and match and merge as two fused kernels,
  registered as torch custom ops; refused in one line where Triton cannot run.
- any other `FusionStep`: the exporter's plugin-flavour step (`tofu_edge.export.plugin`), the plugin kernels through
  ``libtofu_edge_kernels.so`` (`tofu_edge.export.cuda_kernels.KernelStep`).

Forcing ``torch`` or ``triton`` is for benchmarks and bug reports: ``use_step(model, "torch")``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Protocol

import torch

from tofu_edge.arch import split_sizes
from tofu_edge.choices import StepBackend, parse_choice
from tofu_edge.config import Selection, StepOp
from tofu_edge.errors import ConfigError, MissingDependencyError
from tofu_edge.ops.match import TokenMatch, match_tokens
from tofu_edge.ops.merge import fuse_tokens

if TYPE_CHECKING:
    from tofu_edge.patch.block import FusedBlock

__all__ = [
    "FusionStep",
    "torch_step",
    "triton_fusion_step",
    "auto_step",
    "step_for",
    "use_step",
    "check_runs_selection",
]

StepResult = tuple[torch.Tensor, "torch.Tensor | None", "TokenMatch | None"]


class FusionStep(Protocol):
    """One fusion step: match ``r`` sources and fold them into their destinations by ``op``.

    Shapes:
        x: [B, N, C]
        size: [B, N, 1] (``None`` while all ones)
        metric: [B, N, D]
        returns: [B, N - r, C], [B, N - r, 1] (or ``None``), the `TokenMatch` applied (or ``None``)
    """

    def __call__(
        self, x: torch.Tensor, size: torch.Tensor | None, metric: torch.Tensor, num_prefix: int, r: int, op: StepOp
    ) -> StepResult: ...


def torch_step(
    x: torch.Tensor, size: torch.Tensor | None, metric: torch.Tensor, num_prefix: int, r: int, op: StepOp
) -> StepResult:
    """The step in PyTorch ops: `match_tokens` then `fuse_tokens` (what the ONNX export traces).

    Shapes:
        x: [B, N, C]
        size: [B, N, 1]
        metric: [B, N, D]
        returns: [B, N - r, C], [B, N - r, 1]
    """
    match = match_tokens(metric, num_prefix, r)
    x, size = fuse_tokens(x, size, match, op)
    return x, size, match


def triton_fusion_step(
    x: torch.Tensor, size: torch.Tensor | None, metric: torch.Tensor, num_prefix: int, r: int, op: StepOp
) -> StepResult:
    """The step on the fused Triton kernels (`tofu_edge.ops.triton_step`); sizes always come back.

    Raises:
        MissingDependencyError: Triton cannot run on ``x``'s device here.

    Shapes:
        x: [B, N, C]
        size: [B, N, 1]
        metric: [B, N, D]
        returns: [B, N - r, C], [B, N - r, 1]
    """
    from tofu_edge.ops.triton_step import triton_step

    if not _triton_runs_on(str(x.device)):
        raise MissingDependencyError(
            f"the Triton fusion step cannot run on {x.device} here (it needs triton and a CUDA GPU it supports, or "
            "TRITON_INTERPRET=1 on a CPU); use the 'torch' or 'auto' step"
        )
    x, size, order, dst_slot = triton_step(x, size, metric, num_prefix, r, op)
    return x, size, TokenMatch.from_order(order, dst_slot, r, num_dst=split_sizes(metric.shape[1], num_prefix)[1])


def auto_step(
    x: torch.Tensor, size: torch.Tensor | None, metric: torch.Tensor, num_prefix: int, r: int, op: StepOp
) -> StepResult:
    """`triton_fusion_step` on CUDA tensors where Triton runs, `torch_step` everywhere else.

    Shapes:
        x: [B, N, C]
        size: [B, N, 1]
        metric: [B, N, D]
        returns: [B, N - r, C], [B, N - r, 1]
    """
    if x.is_cuda and _triton_runs_on(str(x.device)):
        return triton_fusion_step(x, size, metric, num_prefix, r, op)
    return torch_step(x, size, metric, num_prefix, r, op)


_STEPS = {StepBackend.AUTO: auto_step, StepBackend.TORCH: torch_step, StepBackend.TRITON: triton_fusion_step}


def step_for(backend: StepBackend | str) -> FusionStep:
    """The `FusionStep` of a backend name (``auto``, ``torch``, ``triton``).

    Raises:
        ConfigError: an unknown name.
    """
    return _STEPS[parse_choice(StepBackend, backend, "fusion step")]


def use_step(model: torch.nn.Module, step: StepBackend | str | FusionStep) -> torch.nn.Module:
    """Run every fusion step of a fused ``model`` on ``step`` (in place; ``auto`` restores the default).

    Args:
        model: A model `tofu_edge.fuse` fused.
        step: A backend name or any `FusionStep`.

    Returns:
        The same model object.

    Raises:
        ConfigError: ``model`` is not fused, an unknown backend name, or a step that does not run the model's
            selection (only the PyTorch ops run selections other than ``bipartite``).
    """
    from tofu_edge.patch.block import FusedBlock

    blocks: list[FusedBlock] = [b for b in getattr(model, "blocks", []) if isinstance(b, FusedBlock)]
    if not blocks:
        raise ConfigError("use_step needs a fused model: call tofu_edge.fuse(model, config) first")
    chosen = step if callable(step) else step_for(step)
    for block in blocks:
        if block.tofu_step.r:
            check_runs_selection(chosen, block.tofu_step.selection)
    for block in blocks:
        if chosen is auto_step:
            block.__dict__.pop("tofu_fusion", None)  # back to the class default
        else:
            block.tofu_fusion = chosen
    return model


def check_runs_selection(step: FusionStep, selection: Selection) -> None:
    """Refuse, in one line, a selection that ``step`` does not run: only the PyTorch ops (``torch``, and ``auto``,
    which runs them for a selection) run selections other than ``bipartite``; Triton, plugin nodes and kernels do not.

    Raises:
        ConfigError: ``selection`` is not ``bipartite`` and ``step`` is not the PyTorch ops.
    """
    if selection is Selection.BIPARTITE or step in (auto_step, torch_step):
        return
    name = getattr(step, "__name__", type(step).__name__)
    raise ConfigError(
        f"selection={selection.value} runs on the PyTorch ops and in the portable ONNX flavour only; the Triton step, "
        f"the plugin flavour and the plugin kernels ({name} here) run selection=bipartite: export with --flavor "
        "portable, or use_step(model, 'torch')"
    )


@torch.compiler.assume_constant_result  # a fact of the machine: torch.compile need not trace the probe
def _triton_runs_on(device: str) -> bool:
    return _triton_probe(device)


@functools.cache
def _triton_probe(device: str) -> bool:
    from tofu_edge.ops.triton_step import triton_available

    return triton_available(device)
