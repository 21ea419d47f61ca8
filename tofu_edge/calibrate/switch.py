"""`calibrate_switch`: pick the ToFu prune -> MLERP switch block of a model on real images.

Two methods. ``search`` (the default) fuses the model with every switch from 0 (MLERP everywhere) to ``L``
(prune everywhere) and keeps the one whose outputs stay closest (mean cosine) to the unfused model's; it
costs ``L + 1`` fused forward passes over the calibration images, less the prune blocks they share (`OpsRunner`).
``probe`` is a per-block linearity probe, cheaper but local:

The probe asks, at every block and on real images, which is the better stand-in for a matched pair once
the block's token-wise part ``g(t) = t + ls2(mlp(norm2(t)))`` has run: averaging first (``g(mean(a, b))``,
exact where ``g`` is affine, since affine maps commute with averages) or pruning (``g(b)``, better where
averaging would push the features somewhere ``g`` treats very differently). Both are compared with
``mean(g(a), g(b))``, the pair summarised after the block. The switch is the block ``s`` that minimises the
summed error of pruning below ``s`` and merging from ``s`` on. For matched pairs that are close, the
first-order error of pruning outweighs the second-order error of averaging, so the probe leans towards
merging everywhere; it cannot see how an early merge's error grows through later blocks, which is what
``search`` measures. Both are reported.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from tofu_edge.calibrate.runner import OpsRunner, output_cosines, switch_ops
from tofu_edge.choices import CalibrationMethod, parse_choice
from tofu_edge.config import FusionConfig, StepOp
from tofu_edge.errors import ConfigError
from tofu_edge.ops.match import match_tokens
from tofu_edge.ops.merge import fuse_tokens
from tofu_edge.patch.timm import embed_tokens, fuse

__all__ = ["BlockProbe", "Calibration", "calibrate_switch"]


@dataclass(frozen=True)
class BlockProbe:
    """Relative errors of merging and of pruning the matched pairs of one block (mean over images)."""

    index: int
    r: int
    merge_error: float
    prune_error: float


@dataclass(frozen=True)
class Calibration:
    """Per-block probes, per-switch scores of both methods, and the switch the chosen method picks."""

    method: str
    switch: int
    images: int
    probes: tuple[BlockProbe, ...]
    probe_errors: tuple[float, ...]  # per switch s: pruning error below s + merging error from s
    search_cosines: tuple[float, ...] | None  # per switch s: mean output cosine to the unfused model

    @property
    def probe_switch(self) -> int:
        """The switch the linearity probe alone would pick."""
        return min(range(len(self.probe_errors)), key=lambda s: (self.probe_errors[s], s))

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "switch": self.switch,
            "probe_switch": self.probe_switch,
            "images": self.images,
            "probe_errors": list(self.probe_errors),
            "search_cosines": None if self.search_cosines is None else list(self.search_cosines),
            "blocks": [asdict(p) for p in self.probes],
        }


def calibrate_switch(
    model: torch.nn.Module,
    images: torch.Tensor,
    config: FusionConfig,
    method: CalibrationMethod | str = CalibrationMethod.SEARCH,
    progress: Callable[[int, int], None] | None = None,
) -> Calibration:
    """Choose the ToFu switch block of an unfused timm ViT for ``config``'s schedule.

    Args:
        model: A supported timm ViT, not fused (it is left unchanged).
        images: Calibration images, preprocessed for the model.
        config: The schedule to calibrate for (its ``r`` per block; ``mode`` and ``switch`` are not used).
        method: ``search`` (end-to-end, default) or ``probe`` (per-block linearity probe only); ``per-block``
            is `calibrate_ops`.
        progress: Called with (switches scored, L + 1) after every end-to-end score of ``search``.

    Returns:
        The probes, the per-switch scores and the switch (0 = MLERP everywhere, ``L`` = prune everywhere).

    Raises:
        ConfigError: an unknown method.
        ScheduleError: the schedule cannot be carried out on the model.

    Shapes:
        images: [B, 3, H, W]
    """
    method = parse_choice(CalibrationMethod, method, "calibration method")
    if method is CalibrationMethod.PER_BLOCK:
        raise ConfigError("calibrate_switch picks one switch; per-block calibration is calibrate_ops")
    schedule = config.token_schedule()
    probes = _probe(model, images, schedule)
    switches = range(len(probes) + 1)
    probe_errors = tuple(
        sum(p.prune_error for p in probes[:s]) + sum(p.merge_error for p in probes[s:]) for s in switches
    )
    cosines = None
    if method is CalibrationMethod.SEARCH:
        cosines = _search(model, images, schedule, progress)
        switch = max(switches, key=lambda s: (cosines[s], -s))
    else:
        switch = min(switches, key=lambda s: (probe_errors[s], s))
    return Calibration(method.value, switch, len(images), tuple(probes), probe_errors, cosines)


def _search(
    model: torch.nn.Module,
    images: torch.Tensor,
    config: FusionConfig,
    progress: Callable[[int, int], None] | None,
) -> tuple[float, ...]:
    """Mean cosine of the fused outputs to the unfused ones, for every switch from 0 to ``L`` (the switches' shared
    prune blocks run once)."""
    runner = OpsRunner(model, images, config)
    switches = range(runner.num_blocks + 1)
    with torch.inference_mode():
        reference = model(images)
    cosines = []
    for switch in reversed(switches):  # prune everywhere first: each next switch reuses all but its last blocks
        cosines.append(float(output_cosines(runner(switch_ops(switch, runner.num_blocks)), reference).mean()))
        if progress is not None:
            progress(len(cosines), len(switches))
    return tuple(reversed(cosines))


def _probe(model: torch.nn.Module, images: torch.Tensor, config: FusionConfig) -> list[BlockProbe]:
    """The linearity probe of every block, on the unfused model's tokens (a fused copy's block phases, run without
    removing any token between blocks)."""
    fused = fuse(copy.deepcopy(model), config)
    probes = []
    with torch.no_grad():
        x = embed_tokens(fused, images)
        for block in fused.blocks:
            step = block.tofu_step
            x, metric, _ = block.attention_residual(x, None)
            after = block.mlp_residual
            if step.r > 0:
                match = match_tokens(metric, step.num_prefix, step.r)
                reference, _ = fuse_tokens(after(x), None, match, StepOp.MEAN)
                merged_first = after(fuse_tokens(x, None, match, StepOp.MEAN)[0])
                pruned = fuse_tokens(after(x), None, match, StepOp.PRUNE)[0]
                slots = _destination_slots(match, reference.shape[1])
                probes.append(
                    BlockProbe(
                        step.index, step.r, _error(merged_first, reference, slots), _error(pruned, reference, slots)
                    )
                )
            else:
                probes.append(BlockProbe(step.index, 0, 0.0, 0.0))
            x = after(x)
    return probes


def _destination_slots(match, num_out: int) -> torch.Tensor:
    """``mask[b, o]``: output slot ``o`` received at least one source, ``[B, N - r]``."""
    slots = torch.arange(num_out, device=match.dst_slot.device)
    return (match.dst_slot[:, :, None] == slots).any(dim=1)


def _error(got: torch.Tensor, want: torch.Tensor, slots: torch.Tensor) -> float:
    """Mean relative L2 error over the destination slots."""
    error = (got - want).norm(dim=-1) / want.norm(dim=-1).clamp_min(1e-12)
    return float(error[slots].mean())
