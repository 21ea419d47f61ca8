"""The kernel library (``libtofu_edge_kernels.so``) for the ``gpu`` tests, built once per session.

``$TOFU_KERNEL_API_LIB`` names a built library to use (the GPU kit sets it after its build phase); otherwise
the session builds the kernel-API target of kernels/ for the local GPU's architecture with
`tofu_edge.export.kernel_build.build_kernel_api` (no TensorRT needed), in ``$TOFU_KERNEL_API_BUILD_DIR`` when
set (incremental), else in a temporary folder. Skipped with a reason where torch sees no CUDA device or
cmake / nvcc are missing; a build that fails is a test error, not a skip.
"""

from __future__ import annotations

import os

import pytest
import torch

from tofu_edge.export.cuda_kernels import LIBRARY_ENV, CudaKernels
from tofu_edge.export.kernel_build import build_kernel_api, missing_build_tools

BUILD_DIR_ENV = "TOFU_KERNEL_API_BUILD_DIR"


@pytest.fixture(scope="session")
def cuda_kernels(tmp_path_factory: pytest.TempPathFactory) -> CudaKernels:
    """TofuMatch / TofuMerge on torch CUDA tensors (`tofu_edge.export.cuda_kernels`)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch.cuda.is_available() is False")
    prebuilt = os.environ.get(LIBRARY_ENV)
    if prebuilt:
        return CudaKernels(prebuilt)
    reason = missing_build_tools()
    if reason is not None:
        pytest.skip(reason)
    build_dir = os.environ.get(BUILD_DIR_ENV) or tmp_path_factory.mktemp("kernel-api-build")
    return CudaKernels(build_kernel_api(build_dir).library)
