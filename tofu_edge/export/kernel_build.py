"""Build ``libtofu_edge_kernels.so`` (the plugins' CUDA kernels behind a C ABI, no TensorRT) for `CudaKernels`:
configure and build only that target of ``kernels/`` with CMake, for the local GPU's architecture.

    library = build_kernel_api().library        # build/kernel-api/libtofu_edge_kernels.so
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tofu_edge.export.cuda_kernels import DEFAULT_BUILD_DIR, LIBRARY_NAME, REPO, KernelLibraryError

__all__ = ["KernelBuild", "build_kernel_api", "missing_build_tools", "local_cuda_arch"]

KERNELS_DIR = REPO / "kernels"
TARGET = "tofu_edge_kernels"
OUTPUT_TAIL = 6000


@dataclass(frozen=True)
class KernelBuild:
    """A build of the kernel-API target.

    Args:
        library: ``libtofu_edge_kernels.so``.
        build_dir: CMake build directory.
        archs: CUDA architectures it carries (SASS + PTX each), e.g. ``("90",)``.
        seconds: Wall time of configure + build.
        log: The tail of CMake's output.
    """

    library: Path
    build_dir: Path
    archs: tuple[str, ...]
    seconds: float
    log: str


def missing_build_tools() -> str | None:
    """Why the kernel library cannot be built here (cmake or nvcc missing), or None."""
    for tool in ("cmake", "nvcc"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (the kernel library needs cmake and the CUDA toolkit's nvcc)"
    return None


def local_cuda_arch() -> str | None:
    """The compute capability of CUDA device 0 as CMake spells it (``"90"`` for sm_90), or None without a GPU."""
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        return f"{major}{minor}"
    if shutil.which("nvidia-smi"):
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True, text=True
        )
        first = result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else ""
        if first.replace(".", "").isdigit():
            return first.replace(".", "")
    return None


def build_kernel_api(
    build_dir: Path = DEFAULT_BUILD_DIR,
    archs: list[str] | tuple[str, ...] | None = None,
    jobs: int | None = None,
    timeout: float | None = None,
) -> KernelBuild:
    """Configure and build only the kernel-API target of kernels/ (no TensorRT headers needed).

    Args:
        build_dir: CMake build directory (reused: an unchanged tree builds nothing).
        archs: CUDA architectures; None means the local GPU's, else ``90`` (Hopper).
        jobs: Parallel compile jobs; None means every core.
        timeout: Seconds for configure + build together.

    Raises:
        KernelLibraryError: a tool is missing, or CMake failed (with the tail of its output).
    """
    reason = missing_build_tools()
    if reason is not None:
        raise KernelLibraryError(reason)
    archs = tuple(archs or [local_cuda_arch() or "90"])
    build_dir = Path(build_dir)
    start = time.perf_counter()
    configure = [
        "cmake",
        "-S",
        str(KERNELS_DIR),
        "-B",
        str(build_dir),
        "-DCMAKE_BUILD_TYPE=Release",
        "-DTOFU_BUILD_PLUGINS=OFF",
        "-DTOFU_BUILD_HOST_TESTS=OFF",
        "-DTOFU_BUILD_KERNEL_API=ON",
        f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(archs)}",
    ]
    if shutil.which("ninja") and not (build_dir / "CMakeCache.txt").exists():  # a generator is fixed once chosen
        configure[1:1] = ["-G", "Ninja"]
    log = _run(configure, timeout)
    remaining = None if timeout is None else max(1.0, timeout - (time.perf_counter() - start))
    log += _run(
        ["cmake", "--build", str(build_dir), "--target", TARGET, "--parallel", str(jobs or os.cpu_count() or 2)],
        remaining,
    )
    library = build_dir / LIBRARY_NAME
    if not library.is_file():
        raise KernelLibraryError(f"the build finished without {library}:\n{log[-OUTPUT_TAIL:]}")
    return KernelBuild(library, build_dir, archs, time.perf_counter() - start, log[-OUTPUT_TAIL:])


def _run(command: list[str], timeout: float | None) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise KernelLibraryError(f"{' '.join(command)} ran past {timeout:.0f} s") from error
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise KernelLibraryError(f"{' '.join(command)} failed ({result.returncode}):\n{output[-OUTPUT_TAIL:]}")
    return output
