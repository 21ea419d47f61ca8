"""A fused timm ViT whose fusion steps run on the plugin kernels: TofuMatch + TofuMerge through
``libtofu_edge_kernels.so``, on torch CUDA tensors.

This is what the TensorRT plugin flavour computes in each block (the cosine scores stay an ordinary matmul, the
rest is the two kernels), timed inside PyTorch where no TensorRT is installed: the GPU kit measures it beside the
PyTorch-ops fused model and the unfused one.

    fuse(model, FusionConfig(r=13))
    use_kernel_blocks(model, CudaKernels(library))
"""

from __future__ import annotations

import torch

from benchmarks.gpu.cuda_kernels import CudaKernels
from tofu_edge.ops.match import cosine_scores
from tofu_edge.patch import FusedBlock

__all__ = ["KernelFusedBlock", "use_kernel_blocks"]


class KernelFusedBlock(FusedBlock):
    """A `FusedBlock` whose fusion step is the two plugin kernels (sizes always present, as in the plugin flavour)."""

    tofu_kernels: CudaKernels

    def fusion_step(
        self, x: torch.Tensor, size: torch.Tensor | None, metric: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, None]:
        """Match and remove this block's ``r`` tokens with TofuMatch and TofuMerge.

        Shapes:
            x: [B, N, C]
            size: [B, N, 1]
            metric: [B, N, D]
            returns: [B, N - r, C], [B, N - r, 1]
        """
        step = self.tofu_step
        if step.r == 0:
            return x, size, None
        scores = cosine_scores(metric, step.num_prefix).to(x.dtype).contiguous()
        order, dst_slot = self.tofu_kernels.match(scores, x.shape[1], step.num_prefix, step.r)
        size = torch.ones_like(x[..., :1]) if size is None else size.contiguous()
        x, size = self.tofu_kernels.merge(x.contiguous(), size, order, dst_slot, step.op)
        return x, size, None


def use_kernel_blocks(model: torch.nn.Module, kernels: CudaKernels) -> torch.nn.Module:
    """Swap the fused blocks of ``model`` (in place, the class swap `tofu_edge.fuse` uses) to `KernelFusedBlock`.

    Raises:
        ValueError: ``model`` is not fused.
    """
    if not all(isinstance(block, FusedBlock) for block in model.blocks):
        raise ValueError("use_kernel_blocks needs a fused model: call tofu_edge.fuse(model, config) first")
    for block in model.blocks:
        block.__class__ = KernelFusedBlock
        block.tofu_kernels = kernels
    return model
