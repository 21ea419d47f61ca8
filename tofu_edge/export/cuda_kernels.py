"""The TofuMatch / TofuMerge kernels on torch CUDA tensors, without TensorRT: ``libtofu_edge_kernels.so`` via ctypes.

The library (kernels/kernelApi/tofuKernelApi.h) wraps the very launchers the TensorRT plugins call,
``launchTofuMatch`` and ``launchTofuMerge``, behind a small C ABI that takes raw device pointers, sizes, a type
code and a ``cudaStream_t``. It links cudart statically and needs neither TensorRT nor torch's C++ ABI, so it
loads into any Python that has torch (whatever its version) and serves C/C++ callers as well. Launches go on
torch's current stream, so they order with torch's own work and can be captured in CUDA graphs.

    kernels = CudaKernels(build_kernel_api().library)
    order, dst_slot = kernels.match(scores, num_tokens=197, num_prefix=1, r=13)
    x_out, size_out = kernels.merge(x, size, order, dst_slot, StepOp.MLERP)
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tofu_edge.config import StepOp
from tofu_edge.export.plugin_spec import MODE_CODES

__all__ = [
    "CudaKernels",
    "KernelLibraryError",
    "KernelBuild",
    "build_kernel_api",
    "missing_build_tools",
    "local_cuda_arch",
    "library_path",
    "EXPORTED_SYMBOLS",
    "LIBRARY_ENV",
]

REPO = Path(__file__).resolve().parents[2]
KERNELS_DIR = REPO / "kernels"
DEFAULT_BUILD_DIR = REPO / "build" / "kernel-api"
LIBRARY_NAME = "libtofu_edge_kernels.so"
TARGET = "tofu_edge_kernels"
LIBRARY_ENV = "TOFU_KERNEL_API_LIB"  # a built library to use instead of building one
ABI_VERSION = 1  # TOFU_KERNELS_ABI_VERSION
DTYPE_CODES = {torch.float32: 0, torch.float16: 1}
EXPORTED_SYMBOLS = frozenset(
    {
        "tofu_kernels_abi_version",
        "tofu_kernels_match",
        "tofu_kernels_merge",
        "tofu_kernels_match_problem",
        "tofu_kernels_merge_problem",
        "tofu_kernels_error_string",
        "tofu_kernels_runtime_version",
        "tofu_kernels_driver_version",
    }
)
OUTPUT_TAIL = 6000


class KernelLibraryError(RuntimeError):
    """The kernel library cannot be built or loaded, or a launch failed (the message says which and why)."""


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


def library_path(build_dir: Path = DEFAULT_BUILD_DIR) -> Path:
    """``$TOFU_KERNEL_API_LIB`` when set, else the library in ``build_dir``."""
    from_env = os.environ.get(LIBRARY_ENV)
    return Path(from_env) if from_env else Path(build_dir) / LIBRARY_NAME


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


class CudaKernels:
    """ctypes view of ``libtofu_edge_kernels.so``: TofuMatch and TofuMerge on torch CUDA tensors.

    Every call checks its tensors (CUDA, contiguous, dtypes, shapes against the attributes) and raises
    ValueError on a mismatch, launches on torch's current stream of the tensors' device without
    synchronising, and raises KernelLibraryError when the launch reports a CUDA error.

    Args:
        path: The library; None means ``library_path()``.

    Raises:
        KernelLibraryError: no library there, or one of another ABI.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else library_path()
        if not self.path.is_file():
            raise KernelLibraryError(
                f"{self.path} does not exist: build it with benchmarks.gpu.cuda_kernels.build_kernel_api() or "
                f"`cmake -S kernels -B build/kernel-api -DTOFU_BUILD_PLUGINS=OFF -DTOFU_BUILD_HOST_TESTS=OFF && "
                f"cmake --build build/kernel-api`, or point ${LIBRARY_ENV} at a build"
            )
        try:
            self.lib = ctypes.CDLL(str(self.path))
        except OSError as error:
            raise KernelLibraryError(f"cannot load {self.path}: {error}") from error
        i32, ptr = ctypes.c_int32, ctypes.c_void_p
        signatures = {
            "tofu_kernels_abi_version": ([], i32),
            "tofu_kernels_match": ([ptr, i32, i32, i32, i32, i32, ptr, ptr, ptr], ctypes.c_int),
            "tofu_kernels_merge": ([ptr, ptr, ptr, ptr, i32, i32, i32, i32, i32, i32, ptr, ptr, ptr], ctypes.c_int),
            "tofu_kernels_match_problem": ([i32, i32, i32], ctypes.c_char_p),
            "tofu_kernels_merge_problem": ([i32, i32, i32], ctypes.c_char_p),
            "tofu_kernels_error_string": ([ctypes.c_int], ctypes.c_char_p),
            "tofu_kernels_runtime_version": ([ctypes.POINTER(i32)], ctypes.c_int),
            "tofu_kernels_driver_version": ([ctypes.POINTER(i32)], ctypes.c_int),
        }
        for name, (argtypes, restype) in signatures.items():
            function = getattr(self.lib, name)
            function.argtypes, function.restype = argtypes, restype
        version = self.lib.tofu_kernels_abi_version()
        if version != ABI_VERSION:
            raise KernelLibraryError(f"{self.path} has C ABI version {version}; this wrapper speaks {ABI_VERSION}")

    # Versions and messages.

    def runtime_version(self) -> int:
        """The CUDA runtime linked into the library, 1000 * major + 10 * minor (13000 for 13.0)."""
        return self._version(self.lib.tofu_kernels_runtime_version)

    def driver_version(self) -> int:
        """The CUDA version the installed driver supports, as above; 0 where no driver is installed."""
        return self._version(self.lib.tofu_kernels_driver_version)

    def error_string(self, status: int) -> str:
        return self.lib.tofu_kernels_error_string(status).decode()

    def match_problem(self, num_tokens: int, num_prefix: int, r: int) -> str | None:
        """Why these TofuMatch attributes are invalid (the plugin's own check), or None."""
        problem = self.lib.tofu_kernels_match_problem(num_tokens, num_prefix, r)
        return None if problem is None else problem.decode()

    def merge_problem(self, num_tokens: int, r: int, mode: int) -> str | None:
        """Why these TofuMerge attributes are invalid (the plugin's own check), or None."""
        problem = self.lib.tofu_kernels_merge_problem(num_tokens, r, mode)
        return None if problem is None else problem.decode()

    def _version(self, function) -> int:
        value = ctypes.c_int32(0)
        status = function(ctypes.byref(value))
        if status != 0:
            raise KernelLibraryError(f"{function.__name__}: {self.error_string(status)} ({status})")
        return value.value

    # The kernels.

    def match(
        self,
        scores: torch.Tensor,
        num_tokens: int,
        num_prefix: int,
        r: int,
        *,
        order: torch.Tensor | None = None,
        dst_slot: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """TofuMatch: the index plan of one fusion step from its A-to-B scores (``match_scores``, bit for bit).

        Args:
            scores: Cosine similarities of A tokens to B tokens, fp32 or fp16.
            num_tokens: ``N``, prefix included.
            num_prefix: ``P``.
            r: Sources to pick.
            order: Optional output to write into (int32, contiguous).
            dst_slot: Optional output to write into (int32, contiguous).

        Returns:
            ``order`` and ``dst_slot`` (int32).

        Shapes:
            scores: [B, |A|, |B|]
            returns: [B, N], [B, r]
        """
        problem = self.match_problem(num_tokens, num_prefix, r)
        if problem is not None:
            raise ValueError(f"TofuMatch(num_tokens={num_tokens}, num_prefix={num_prefix}, r={r}): {problem}")
        dtype = _float_code(scores, "scores")
        a_start = num_prefix + num_prefix % 2
        num_a = len(range(a_start, num_tokens, 2))
        num_b = len(range(2 * num_prefix + 1 - a_start, num_tokens, 2))
        batch = scores.shape[0] if scores.dim() == 3 else -1
        _expect(scores, "scores", (batch, num_a, num_b), scores.dtype, scores.device)
        order = _output(order, "order", (batch, num_tokens), torch.int32, scores.device)
        dst_slot = _output(dst_slot, "dst_slot", (batch, r), torch.int32, scores.device)
        with _on_device(scores.device):
            status = self.lib.tofu_kernels_match(
                scores.data_ptr(),
                dtype,
                batch,
                num_tokens,
                num_prefix,
                r,
                order.data_ptr(),
                dst_slot.data_ptr(),
                torch.cuda.current_stream(scores.device).cuda_stream,
            )
        self._check(status, "TofuMatch")
        return order, dst_slot

    def merge(
        self,
        x: torch.Tensor,
        size: torch.Tensor,
        order: torch.Tensor,
        dst_slot: torch.Tensor,
        mode: StepOp | str | int,
        *,
        x_out: torch.Tensor | None = None,
        size_out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """TofuMerge: apply an index plan by prune, size-weighted mean or MLERP (``fuse_tokens`` with sizes).

        Args:
            x: Tokens, fp32 or fp16.
            size: Patches per token, the dtype of ``x``.
            order: From TofuMatch (int32).
            dst_slot: From TofuMatch (int32).
            mode: A `StepOp` (or its name), or the plugin's integer code.
            x_out: Optional output to write into (dtype of ``x``, contiguous).
            size_out: Optional output to write into (dtype of ``x``, contiguous).

        Returns:
            The fused tokens and their sizes.

        Shapes:
            x: [B, N, C]
            size: [B, N, 1]
            order: [B, N]
            dst_slot: [B, r]
            returns: [B, N - r, C], [B, N - r, 1]
        """
        code = mode if isinstance(mode, int) else MODE_CODES[StepOp(mode)]
        dtype = _float_code(x, "x")
        batch, num_tokens, channels = x.shape if x.dim() == 3 else (-1, -1, -1)
        r = dst_slot.shape[1] if dst_slot.dim() == 2 else -1
        problem = self.merge_problem(num_tokens, r, code)
        if problem is not None:
            raise ValueError(f"TofuMerge(num_tokens={num_tokens}, r={r}, mode={code}): {problem}")
        _expect(x, "x", (batch, num_tokens, channels), x.dtype, x.device)
        _expect(size, "size", (batch, num_tokens, 1), x.dtype, x.device)
        _expect(order, "order", (batch, num_tokens), torch.int32, x.device)
        _expect(dst_slot, "dst_slot", (batch, r), torch.int32, x.device)
        x_out = _output(x_out, "x_out", (batch, num_tokens - r, channels), x.dtype, x.device)
        size_out = _output(size_out, "size_out", (batch, num_tokens - r, 1), x.dtype, x.device)
        with _on_device(x.device):
            status = self.lib.tofu_kernels_merge(
                x.data_ptr(),
                size.data_ptr(),
                order.data_ptr(),
                dst_slot.data_ptr(),
                dtype,
                batch,
                num_tokens,
                channels,
                r,
                code,
                x_out.data_ptr(),
                size_out.data_ptr(),
                torch.cuda.current_stream(x.device).cuda_stream,
            )
        self._check(status, "TofuMerge")
        return x_out, size_out

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            raise KernelLibraryError(f"{what}: {self.error_string(status)} (CUDA error {status})")


def _float_code(tensor: torch.Tensor, name: str) -> int:
    if tensor.dtype not in DTYPE_CODES:
        raise ValueError(f"{name} must be float32 or float16, got {tensor.dtype}")
    return DTYPE_CODES[tensor.dtype]


def _expect(tensor: torch.Tensor, name: str, shape: tuple, dtype: torch.dtype, device: torch.device) -> None:
    if tensor.device.type != "cuda":
        raise ValueError(f"{name} must be a CUDA tensor, got one on {tensor.device}")
    if tensor.device != device:
        raise ValueError(f"{name} is on {tensor.device}, the other tensors on {device}")
    if tuple(tensor.shape) != shape or min(shape) < 0:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(tensor.shape)}")
    if tensor.dtype != dtype:
        raise ValueError(f"{name} must be {dtype}, got {tensor.dtype}")
    if not tensor.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def _output(tensor: torch.Tensor | None, name: str, shape: tuple, dtype: torch.dtype, device) -> torch.Tensor:
    if tensor is None:
        return torch.empty(shape, dtype=dtype, device=device)
    _expect(tensor, name, shape, dtype, device)
    return tensor


class _on_device:
    """Makes ``device`` torch's current CUDA device for the launch, where it is not already (no-op otherwise)."""

    def __init__(self, device: torch.device) -> None:
        self.switch = device.index is not None and device.index != torch.cuda.current_device()
        self.context = torch.cuda.device(device) if self.switch else None

    def __enter__(self) -> None:
        if self.context is not None:
            self.context.__enter__()

    def __exit__(self, *exc) -> None:
        if self.context is not None:
            self.context.__exit__(*exc)
