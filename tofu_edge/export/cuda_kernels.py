"""The TofuMatch / TofuMerge kernels on torch CUDA tensors, without TensorRT: ``libtofu_edge_kernels.so`` via ctypes,
and `KernelStep`, a fused model's fusion step on them (`tofu_edge.use_step(model, KernelStep(CudaKernels()))`).

The library (kernels/kernelApi/tofuKernelApi.h) wraps the very launchers the TensorRT plugins call,
``launchTofuMatch`` and ``launchTofuMerge``, behind a small C ABI that takes raw device pointers, sizes, a type
code and a ``cudaStream_t``. It links cudart statically and needs neither TensorRT nor torch's C++ ABI, so it
loads into any Python that has torch (whatever its version) and serves C/C++ callers as well. Launches go on
torch's current stream, so they order with torch's own work and can be captured in CUDA graphs.

    kernels = CudaKernels(build_kernel_api().library)     # build_kernel_api: tofu_edge.export.kernel_build
    order, dst_slot = kernels.match(scores, num_tokens=197, num_prefix=1, r=13)
    x_out, size_out = kernels.merge(x, size, order, dst_slot, StepOp.MLERP)
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from tofu_edge.config import StepOp
from tofu_edge.errors import TofuError
from tofu_edge.export.plugin_spec import MODE_CODES
from tofu_edge.ops.match import TokenMatch, cosine_scores

__all__ = [
    "CudaKernels",
    "KernelStep",
    "KernelLibraryError",
    "library_path",
    "EXPORTED_SYMBOLS",
    "LIBRARY_ENV",
    "LIBRARY_NAME",
    "DEFAULT_BUILD_DIR",
]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BUILD_DIR = REPO / "build" / "kernel-api"
LIBRARY_NAME = "libtofu_edge_kernels.so"
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


class KernelLibraryError(TofuError, RuntimeError):
    """The kernel library cannot be built or loaded, or a launch failed (the message says which and why)."""


def library_path(build_dir: Path = DEFAULT_BUILD_DIR) -> Path:
    """``$TOFU_KERNEL_API_LIB`` when set, else the library in ``build_dir``."""
    from_env = os.environ.get(LIBRARY_ENV)
    return Path(from_env) if from_env else Path(build_dir) / LIBRARY_NAME


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
                f"{self.path} does not exist: build it with tofu_edge.export.kernel_build.build_kernel_api() or "
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


@dataclass(frozen=True)
class KernelStep:
    """A `tofu_edge.patch.FusionStep` on the plugin kernels: the cosine scores as an ordinary matmul, then
    TofuMatch and TofuMerge through ``libtofu_edge_kernels.so`` (what the TensorRT plugin flavour computes), on
    torch CUDA tensors in fp32 or fp16. Sizes always come back.

    Args:
        kernels: The loaded library.
    """

    kernels: CudaKernels

    def __call__(
        self, x: torch.Tensor, size: torch.Tensor | None, metric: torch.Tensor, num_prefix: int, r: int, op: StepOp
    ) -> tuple[torch.Tensor, torch.Tensor, TokenMatch]:
        """One fusion step.

        Shapes:
            x: [B, N, C]
            size: [B, N, 1]
            metric: [B, N, D]
            returns: [B, N - r, C], [B, N - r, 1], the match (int32 indices widened to int64)
        """
        num_tokens = x.shape[1]
        scores = cosine_scores(metric, num_prefix).to(x.dtype).contiguous()
        order, dst_slot = self.kernels.match(scores, num_tokens, num_prefix, r)
        size = torch.ones_like(x[..., :1]) if size is None else size.to(x.dtype).contiguous()
        x, size = self.kernels.merge(x.contiguous(), size, order, dst_slot, op)
        num_dst = scores.shape[2]
        return x, size, TokenMatch.from_order(order.long(), dst_slot.long(), r, num_dst=num_dst)
