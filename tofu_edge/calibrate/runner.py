"""`OpsRunner`: one model's outputs under many per-block operation lists, each shared block prefix run once.

Block ``l`` of a fused model computes the same tokens for every operation list that agrees on blocks ``0..l``
(its plan depends only on the schedule and the operations up to it). The runner keeps the tokens entering every
block for the last list it ran, and a new list restarts from the longest prefix it shares with that one. Lists in
lexicographic order (what `OpsRunner.run_many` does) therefore cost one pass over their prefix tree: the switches
0..L of ``tofu`` mode cost about half of L + 1 separate passes, and changing one block of a list (the per-block
search) costs only the blocks from there on.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tofu_edge.config import FusionConfig, StepOp
from tofu_edge.patch.timm import describe_vit, embed_tokens, fuse
from tofu_edge.plan import FusionPlan, resolve_plan

__all__ = ["OpsRunner", "switch_ops", "uniform_ops", "output_cosines"]

Ops = tuple[StepOp, ...]


def switch_ops(switch: int, num_blocks: int) -> Ops:
    """The operations of ``tofu`` mode: prune below ``switch``, MLERP from it (0: MLERP everywhere)."""
    return (StepOp.PRUNE,) * switch + (StepOp.MLERP,) * (num_blocks - switch)


def uniform_ops(op: StepOp | str, num_blocks: int) -> Ops:
    """One operation in every block."""
    return (StepOp(op),) * num_blocks


def output_cosines(outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image cosine between two models' outputs, each flattened to a vector.

    Shapes:
        outputs: [B, ...], reference: [B, ...]
        returns: [B]
    """
    return F.cosine_similarity(outputs.flatten(1).double(), reference.flatten(1).double(), dim=1)


class OpsRunner:
    """Outputs of a model fused with ``schedule`` and any per-block operation list, on fixed images.

    Args:
        model: A supported timm ViT, not fused; the runner works on its own copy.
        images: The images every list runs on (one batch: the runner holds one token state per block).
        schedule: The token schedule (``r`` or ``keep``, ``inflection``, ``clamp``, ``align``, ``prop_attn``);
            its mode, switch and ops are replaced by each list.

    Raises:
        ScheduleError: the schedule cannot be carried out on the model (raised by the first run).

    Shapes:
        images: [B, 3, H, W]
    """

    def __init__(self, model: torch.nn.Module, images: torch.Tensor, schedule: FusionConfig) -> None:
        self._model = copy.deepcopy(model)
        self._arch = describe_vit(self._model)
        self._images = images
        self._schedule = schedule.token_schedule()
        self._plan: tuple | None = None  # block plans of the last list run
        self._states: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # tokens and sizes entering each block
        self.blocks_run = 0  # fused blocks computed so far: the cost the prefix sharing saves on

    @property
    def num_blocks(self) -> int:
        """Blocks of the model."""
        return len(self._model.blocks)

    def config(self, ops: Sequence[StepOp | str]) -> FusionConfig:
        """The `FusionConfig` of the schedule with ``ops`` (mode ``per-block``)."""
        return dataclasses.replace(self._schedule, ops=tuple(ops))

    def plan(self, ops: Sequence[StepOp | str]) -> FusionPlan:
        """The static plan of the schedule with ``ops``.

        Raises:
            ScheduleError: the schedule cannot be carried out on the model.
        """
        return resolve_plan(self.config(ops), self._arch)

    def __call__(self, ops: Sequence[StepOp | str]) -> torch.Tensor:
        """The fused model's outputs with these per-block operations.

        Shapes:
            returns: [B, ...] what the model returns (logits, or features for a model without a head)
        """
        return self.outputs(self.config(ops))

    def outputs(self, config: FusionConfig) -> torch.Tensor:
        """The model's outputs fused with any ``config`` (its own schedule too), restarting from the blocks it
        shares with the config run before it (`tofu-edge tune` scores many schedules this way).

        Raises:
            ScheduleError: the schedule cannot be carried out on the model.

        Shapes:
            returns: [B, ...] what the model returns (logits, or features for a model without a head)
        """
        model = fuse(self._model, config)
        plan = model.tofu_plan.blocks
        start = self._shared_prefix(plan)
        self._plan = None  # until this run is complete, the states match no plan
        with torch.inference_mode():
            if not self._states:
                self._states = [(embed_tokens(model, self._images), None)]
            del self._states[start + 1 :]
            x, size = self._states[start]
            for block in model.blocks[start:]:
                x, size = block.forward_fused(x, size)
                self._states.append((x, size))
                self.blocks_run += 1
            self._states.pop()  # the last block's output is not the input of any block
            outputs = model.forward_fused_head(model.norm(x), size)
        self._plan = plan
        return outputs

    def run_many(self, ops_lists: Sequence[Sequence[StepOp | str]]) -> list[torch.Tensor]:
        """Outputs of several lists, run in lexicographic order (most sharing), returned in the order given."""
        keys = [tuple(StepOp(op).value for op in ops) for ops in ops_lists]
        outputs: dict[tuple[str, ...], torch.Tensor] = {}
        for key in sorted(set(keys)):
            outputs[key] = self(key)
        return [outputs[key] for key in keys]

    def _shared_prefix(self, plan: tuple) -> int:
        """The first block to run: the stored states hold the tokens entering blocks ``0..L-1`` of the last list,
        and those entering block ``k`` are valid for ``plan`` if its blocks ``0..k-1`` are the same."""
        if self._plan is None:
            self._states = []
            return 0
        shared = 0
        while shared < len(plan) - 1 and plan[shared] == self._plan[shared]:
            shared += 1
        return shared
