"""`FusedBlock`: timm's `Block` with a fusion step between the attention and the MLP."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block

from tofu_edge.ops.match import match_tokens
from tofu_edge.ops.merge import fuse_tokens
from tofu_edge.ops.plugin import plugin_step
from tofu_edge.patch.attention import attend, size_bias
from tofu_edge.plan import BlockPlan

__all__ = ["FusedBlock"]


class FusedBlock(Block):
    """A timm `Block` whose class was swapped in place by `tofu_edge.fuse`; weights are untouched.

    ``tofu_step`` holds the block's static `BlockPlan`.
    """

    tofu_step: BlockPlan
    tofu_plugin_ops: bool = False  # the exporter's plugin flavour sets it on the blocks it traces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the block on tokens of size 1 (the fused model threads sizes through `forward_fused`).

        Shapes:
            x: [B, N, C]
            returns: [B, N - r, C]
        """
        return self.forward_fused(x, None)[0]

    def forward_fused(self, x: torch.Tensor, size: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention, fusion step, MLP.

        Args:
            x: Tokens.
            size: Patches each token stands for; ``None`` while all ones.

        Returns:
            Tokens and sizes after the block.

        Shapes:
            x: [B, N, C]
            size: [B, N, 1]
            returns: [B, N - r, C], [B, N - r, 1]
        """
        step = self.tofu_step
        if step.r == 0 and not step.prop_attn:
            return super().forward(x), size  # nothing to change: timm's own block, bit for bit
        bias = size_bias(size) if step.prop_attn and size is not None else None
        attn_out, metric = attend(self.attn, self.norm1(x), bias, with_metric=step.r > 0)
        x = x + self.drop_path1(self.ls1(attn_out))
        if step.r > 0 and self.tofu_plugin_ops:
            x, size = plugin_step(x, size, metric, step.num_prefix, step.r, step.mode)
        elif step.r > 0:
            x, size = fuse_tokens(x, size, match_tokens(metric, step.num_prefix, step.r), step.mode)
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, size
