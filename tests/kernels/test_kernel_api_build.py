"""libtofu_edge_kernels.so, the kernel launchers behind a C ABI: it builds without TensorRT, exports its C
functions only, carries sm_90 code, and loads and answers without a GPU (a launch then fails cleanly).

Builds only that target, for one arch (``$TOFU_KERNEL_API_BUILD_DIR`` reuses a build folder). The kernels'
results on a GPU are tests/gpu's business.
"""

from __future__ import annotations

import ctypes
import os
import shutil

import pytest
import torch

from tests.kernels.test_kernel_build import FATBIN_ELF, FATBIN_PTX, exported_functions, fatbin_entries, needed
from tofu_edge.export.cuda_kernels import EXPORTED_SYMBOLS, CudaKernels
from tofu_edge.export.kernel_build import KernelBuild, build_kernel_api, missing_build_tools

ARCH = "90"
CUDA_ERROR_INVALID_VALUE = 1


@pytest.fixture(scope="module")
def api_build(tmp_path_factory: pytest.TempPathFactory) -> KernelBuild:
    reason = missing_build_tools()
    if reason is not None:
        pytest.skip(reason)
    for tool in ("readelf", "nm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} (binutils) is not on PATH")
    build_dir = os.environ.get("TOFU_KERNEL_API_BUILD_DIR") or tmp_path_factory.mktemp("kernel-api")
    return build_kernel_api(build_dir, archs=[ARCH])


@pytest.fixture(scope="module")
def kernels(api_build: KernelBuild) -> CudaKernels:
    return CudaKernels(api_build.library)


def test_builds_without_tensorrt_headers(api_build):
    cache = (api_build.build_dir / "CMakeCache.txt").read_text()
    assert "TOFU_BUILD_PLUGINS:BOOL=OFF" in cache and "TOFU_BUILD_HOST_TESTS:BOOL=OFF" in cache
    assert "TensorRT_INCLUDE_DIR" not in cache  # never looked for


def test_exports_exactly_the_c_functions(api_build):
    assert exported_functions(api_build.library) == set(EXPORTED_SYMBOLS)


def test_needs_neither_the_driver_nor_a_shared_cudart(api_build):
    libraries = needed(api_build.library)
    assert libraries, "no NEEDED entries read"
    assert not [n for n in libraries if n.startswith(("libcuda.", "libcudart.", "libnvinfer", "libtorch"))], libraries


def test_carries_sass_and_ptx_for_its_arch(api_build):
    entries = fatbin_entries(api_build.library)
    assert (FATBIN_ELF, int(ARCH)) in entries and (FATBIN_PTX, int(ARCH)) in entries, sorted(entries)


def test_loads_and_reports_versions_without_a_gpu(kernels):
    assert kernels.runtime_version() >= 12000  # the static cudart nvcc linked in
    assert kernels.driver_version() >= 0  # 0 where no driver is installed


def test_attribute_checks_are_the_plugins(kernels):
    assert kernels.match_problem(197, 1, 13) is None
    assert kernels.match_problem(197, 1, 99) == "r must be in [1, |A|], |A| = the non-prefix tokens at even positions"
    assert kernels.match_problem(8193, 1, 1) == "num_tokens must be in [2, 8192]"
    assert kernels.merge_problem(197, 13, 2) is None
    assert kernels.merge_problem(197, 13, 3).startswith("mode must be one of the modes")
    assert kernels.merge_problem(197, 197, 1).startswith("r must be in [1, num_tokens - 1]")


def test_invalid_arguments_are_refused_before_any_launch(kernels):
    fake = ctypes.c_void_p(16)  # never dereferenced: the checks come first
    assert kernels.lib.tofu_kernels_match(fake, 0, 1, 197, 1, 99, fake, fake, None) == CUDA_ERROR_INVALID_VALUE
    assert kernels.lib.tofu_kernels_match(fake, 7, 1, 197, 1, 13, fake, fake, None) == CUDA_ERROR_INVALID_VALUE
    assert kernels.lib.tofu_kernels_match(None, 0, 1, 197, 1, 13, fake, fake, None) == CUDA_ERROR_INVALID_VALUE
    args = [fake] * 4 + [0, 1, 197, 8, 13, 3, fake, fake, None]  # mode 3
    assert kernels.lib.tofu_kernels_merge(*args) == CUDA_ERROR_INVALID_VALUE
    assert kernels.error_string(CUDA_ERROR_INVALID_VALUE) == "invalid argument"


def test_an_empty_batch_launches_nothing(kernels):
    assert kernels.lib.tofu_kernels_match(None, 1, 0, 197, 1, 13, None, None, None) == 0
    assert kernels.lib.tofu_kernels_merge(None, None, None, None, 1, 0, 197, 8, 13, 2, None, None, None) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the launch would run (tests/gpu checks it)")
def test_a_launch_without_a_gpu_fails_with_a_cuda_error(kernels):
    fake = ctypes.c_void_p(16)
    status = kernels.lib.tofu_kernels_match(fake, 0, 1, 197, 1, 13, fake, fake, None)
    assert status not in (0, CUDA_ERROR_INVALID_VALUE)
    assert kernels.error_string(status)  # e.g. "CUDA driver version is insufficient for CUDA runtime version"
