"""A fused model whose fusion steps run on the plugin kernels gives the PyTorch fused model's outputs (GPU)."""

from __future__ import annotations

import copy

import pytest
import torch

import tofu_edge
from tofu_edge import FusionConfig
from tofu_edge.export.cuda_kernels import KernelStep

pytestmark = pytest.mark.gpu

ATOL_FP32 = 1e-4
MIN_COSINE_FP16 = 0.999  # fp16: a whole model's rounding; the kernels accumulate in fp32, PyTorch's ops in fp16


def assert_same_outputs(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    got, want = got.float(), want.float()
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, atol=ATOL_FP32, rtol=0)
    else:
        assert torch.nn.functional.cosine_similarity(got, want, dim=-1).min() >= MIN_COSINE_FP16


def tiny_vit(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    model = tofu_edge.create_model(
        "vit_small_patch16_224", img_size=64, patch_size=8, embed_dim=96, depth=4, num_heads=3
    )
    return model.to(device="cuda", dtype=dtype).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("mode", ["mlerp", "mean", "tofu", "prune"])
def test_kernel_steps_match_the_pytorch_fused_model(cuda_kernels, dtype, mode):
    fused = tofu_edge.fuse(tiny_vit(dtype), FusionConfig(r=6, mode=mode, switch=2))
    on_kernels = tofu_edge.use_step(copy.deepcopy(fused), KernelStep(cuda_kernels))
    images = torch.randn(4, 3, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(1)).to(dtype)
    with torch.inference_mode():
        want, got = fused(images).float(), on_kernels(images).float()
    assert all(block.tofu_fusion == KernelStep(cuda_kernels) for block in on_kernels.blocks)
    assert_same_outputs(got, want, dtype)


def test_a_kernel_fused_model_replays_in_a_cuda_graph(cuda_kernels):
    model = tofu_edge.use_step(tofu_edge.fuse(tiny_vit(torch.float16), FusionConfig(r=6)), KernelStep(cuda_kernels))
    static = torch.randn(2, 3, 64, 64, device="cuda", dtype=torch.float16)
    with torch.inference_mode():
        model(static)  # warm-up outside the capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = model(static)
        fresh = torch.randn_like(static)
        static.copy_(fresh)
        graph.replay()
        torch.cuda.synchronize()
        assert_same_outputs(output, model(fresh), torch.float16)
