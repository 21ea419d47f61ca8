"""`FusedBlock`: timm's `Block` with a fusion step between the attention and the MLP, composed once.

The block's three phases are methods, so everything that walks a fused model block by block (the loop
reference, `tofu_edge.visualize`, `tofu_edge.calibrate`) calls the same code the forward pass runs. Where the
fusion step runs (PyTorch ops, Triton kernels, the exporter's plugin nodes, the plugin kernels) is the block's
``tofu_fusion`` (`tofu_edge.patch.steps`).
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block

from tofu_edge.config import Selection
from tofu_edge.ops.match import TokenMatch
from tofu_edge.ops.merge import fuse_tokens
from tofu_edge.ops.select import select_tokens
from tofu_edge.patch.attention import class_attention, mean_key, size_bias
from tofu_edge.patch.steps import FusionStep, auto_step, check_runs_selection
from tofu_edge.plan import BlockPlan

__all__ = ["FusedBlock"]


class FusedBlock(Block):
    """A timm `Block` whose class was swapped in place by `tofu_edge.fuse`; weights are untouched.

    ``tofu_step`` holds the block's static `BlockPlan`; ``tofu_fusion`` the `FusionStep` that runs its fusion step
    (`tofu_edge.patch.steps.auto_step` unless `use_step` chose another).
    """

    tofu_step: BlockPlan
    tofu_fusion: FusionStep = staticmethod(auto_step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the block on tokens of size 1 (the fused model threads sizes through `forward_fused`).

        Shapes:
            x: [B, N, C]
            returns: [B, N - r, C]
        """
        return self.forward_fused(x, None)[0]

    def forward_fused(self, x: torch.Tensor, size: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention residual, fusion step, MLP residual.

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
        x, metric, attention = self.attention_residual(x, size)
        x, size, _ = self.fusion_step(x, size, metric, attention)
        return self.mlp_residual(x), size

    def attention_residual(
        self, x: torch.Tensor, size: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``x + ls1(attn(norm1(x)))`` through timm's own attention, proportional to ``size`` where the plan says
        so, the matching metric of this block (``None`` when it removes nothing) and, for ``selection=attention``,
        the class token's attention (else ``None``).

        Shapes:
            x: [B, N, C]
            size: [B, N, 1]
            returns: [B, N, C], [B, N, D], [B, N]
        """
        step = self.tofu_step
        bias = size_bias(size) if step.prop_attn and size is not None else None
        normed = self.norm1(x)
        metric = mean_key(self.attn, normed) if step.r > 0 else None
        attention = None
        if step.r > 0 and step.selection is Selection.ATTENTION:
            attention = class_attention(self.attn, normed, bias)
        return x + self.drop_path1(self.ls1(self.attn(normed, attn_mask=bias))), metric, attention

    def fusion_step(
        self,
        x: torch.Tensor,
        size: torch.Tensor | None,
        metric: torch.Tensor | None,
        attention: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, TokenMatch | None]:
        """Match and remove this block's ``r`` tokens by its step operation, on the block's `FusionStep`.

        A selection other than ``bipartite`` runs on the PyTorch ops (what the portable ONNX flavour traces); the
        Triton step, the plugin flavour and the plugin kernels refuse it.

        Returns:
            The kept tokens, their sizes (``None`` while all ones) and the `TokenMatch` that was applied
            (``None`` when the block removes nothing).

        Raises:
            ConfigError: a selection the block's `FusionStep` does not run.

        Shapes:
            x: [B, N, C]
            size: [B, N, 1]
            metric: [B, N, D]
            attention: [B, N]
            returns: [B, N - r, C], [B, N - r, 1]
        """
        step = self.tofu_step
        if step.r == 0:
            return x, size, None
        if step.selection is Selection.BIPARTITE:
            return self.tofu_fusion(x, size, metric, step.num_prefix, step.r, step.op)
        check_runs_selection(self.tofu_fusion, step.selection)
        match = select_tokens(metric, step.num_prefix, step.r, step.selection, step.protect, attention)
        x, size = fuse_tokens(x, size, match, step.op)
        return x, size, match

    def mlp_residual(self, x: torch.Tensor) -> torch.Tensor:
        """``x + ls2(mlp(norm2(x)))``.

        Shapes:
            x: [B, N, C]
            returns: [B, N, C]
        """
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
