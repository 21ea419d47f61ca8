"""`MergeStep` and the class mixin that runs a diffusers sub-module (attention or feed-forward) on merged tokens.

The mixin is placed in front of the sub-module's own class (``FusedAttention``, ``FusedFeedForward``); its forward
merges the input tokens, calls the class's own ``forward`` on them, and unmerges the output. The transformer
block's forward stays diffusers' own, so its residual adds, gates and norms see the full, unmerged ``N`` tokens,
as in tomesd.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tofu_edge.config import StepOp
from tofu_edge.diffusion.tokens import GridPartition, match_grid, merge_tokens, unmerge_tokens
from tofu_edge.errors import InputShapeError, UnsupportedModelError

__all__ = ["MergeStep", "MergeThenUnmerge", "fused_class", "is_fused_module"]


@dataclass(frozen=True)
class MergeStep:
    """The static plan of one fused sub-module.

    Attributes:
        name: The sub-module's name in the model (``down_blocks.0.attentions.0.transformer_blocks.0.attn1``).
        kind: ``attn1`` (self-attention), ``attn2`` (cross-attention) or ``ff``.
        level: Resolution level (downsampled ``2**level`` times).
        partition: The A/B split of the level's token grid.
        r: Tokens merged away.
        op: What happens to the sources.
    """

    name: str
    kind: str
    level: int
    partition: GridPartition
    r: int
    op: StepOp

    @property
    def num_tokens(self) -> int:
        return self.partition.num_tokens

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "level": self.level,
            "grid": [self.partition.height, self.partition.width],
            "tokens": self.num_tokens,
            "r": self.r,
            "tokens_kept": self.num_tokens - self.r,
            "op": str(self.op),
        }


class MergeThenUnmerge:
    """Mixin in front of a diffusers ``Attention`` or ``FeedForward`` class; ``tofu_step`` holds its `MergeStep`."""

    tofu_step: MergeStep
    tofu_unfused_class: type

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """The sub-module's own forward on the merged tokens, unmerged back to every position.

        Shapes:
            hidden_states: [B, N, C]
            returns: [B, N, C]
        """
        step = self.tofu_step
        if hidden_states.dim() != 3 or hidden_states.shape[1] != step.num_tokens:
            grid = f"{step.partition.height}x{step.partition.width}"
            raise InputShapeError(
                f"{step.name} was fused for a {grid} token grid ({step.num_tokens} tokens, [B, N, C]), got "
                f"{list(hidden_states.shape)}; apply tofu_edge.diffusion again with the latent size you run"
            )
        if step.kind == "attn1" and (
            kwargs.get("attention_mask") is not None or (len(args) > 1 and args[1] is not None)
        ):
            raise UnsupportedModelError(f"{step.name}: a self-attention mask cannot follow merged tokens; pass none")
        match, slot = match_grid(hidden_states, step.partition, step.r)
        out = super().forward(merge_tokens(hidden_states, match, step.op), *args, **kwargs)
        return unmerge_tokens(out, slot)


_FUSED_CLASSES: dict[type, type] = {}


def fused_class(base: type) -> type:
    """``Fused<Base>``: `MergeThenUnmerge` in front of ``base``, one class per base."""
    if base not in _FUSED_CLASSES:
        attrs = {"tofu_unfused_class": base, "__module__": __name__}
        _FUSED_CLASSES[base] = type(f"Fused{base.__name__}", (MergeThenUnmerge, base), attrs)
    return _FUSED_CLASSES[base]


def is_fused_module(module: torch.nn.Module) -> bool:
    """Whether ``module``'s class was swapped by `tofu_edge.diffusion.apply`."""
    return isinstance(module, MergeThenUnmerge)
