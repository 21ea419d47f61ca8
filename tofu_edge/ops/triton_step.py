"""One fusion step in four launches (unit rows, score GEMM, match, merge), as torch custom ops over Triton kernels.

``tofu_edge::triton_step`` computes what `match_tokens` + `fuse_tokens` compute and returns the index plan in the
plugin contract's form (`TokenMatch.from_order`). Each op has a fake kernel, so eager mode, CUDA graphs,
``torch.compile(fullgraph=True)`` and ``torch.export`` all see one opaque node. On CUDA the kernels compile; on the
CPU they run only in Triton's interpreter (``TRITON_INTERPRET=1`` before `tofu_edge.ops.triton_kernels` is first
imported), which is how they are tested without a GPU. Importing this module never needs triton.
"""

from __future__ import annotations

import importlib
from contextlib import nullcontext
from types import ModuleType

import torch

from tofu_edge.arch import split_sizes
from tofu_edge.config import StepOp
from tofu_edge.ops.match import split_starts

__all__ = ["triton_available", "triton_step", "triton_scores", "triton_match", "triton_merge"]

_MODES = {StepOp.PRUNE: 0, StepOp.MEAN: 1, StepOp.MLERP: 2}  # the plugin contract's mode codes
# The largest block along each axis. Tests shrink them so that every chunk loop runs at tiny sizes.
_LIMITS = {"rows": 128, "partners": 64, "metric_channels": 128, "channels": 512, "tile": 4096}


def triton_available(device: torch.device | str) -> bool:
    """Whether the Triton step runs on ``device``: compiled on a CUDA GPU of compute capability >= 7 (what torch's
    inductor asks of Triton too), interpreted on the CPU. False for CUDA under the interpreter, which would copy
    every tensor to the host and back.

    The first call imports the kernels, which fixes for the process whether they are interpreted.
    """
    device = torch.device(device)
    kernels = _kernels()
    if kernels is None:
        return False
    if device.type == "cpu":
        return _interpreted(kernels)
    if device.type != "cuda" or _interpreted(kernels) or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device)[0] >= 7


def triton_step(
    x: torch.Tensor, size: torch.Tensor | None, metric: torch.Tensor, num_prefix: int, r: int, op: StepOp
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`match_tokens` + `fuse_tokens` in four launches: unit metric rows, the score GEMM, the match, the merge.

    Args:
        x: Tokens (fp32, fp16 or bf16; sums in fp32).
        size: Patches each token stands for; ``None`` means all ones.
        metric: Matching features.
        num_prefix: Protected prefix tokens ``P``.
        r: Tokens to remove, ``1 <= r <= |A|``.
        op: What to do with the sources.

    Returns:
        The tokens, their sizes (a tensor even for ``size=None``, of ``size``'s dtype else ``x``'s), ``order`` and
        ``dst_slot``: ``TokenMatch.from_order(order, dst_slot, r, num_dst=|B|)`` is the match applied.

    Shapes:
        x: [B, N, C]
        size: [B, N, 1]
        metric: [B, N, Ck]
        returns: [B, N - r, C], [B, N - r, 1], [B, N] (int64), [B, r] (int64)
    """
    _check_plan(x.shape[1], num_prefix, r)
    if metric.shape[:2] != x.shape[:2] or (size is not None and size.shape != (*x.shape[:2], 1)):
        raise ValueError(f"x {tuple(x.shape)}, size and metric {tuple(metric.shape)} must share [B, N]")
    return torch.ops.tofu_edge.triton_step(x, size, metric, num_prefix, r, _MODES[StepOp(op)])


def triton_scores(metric: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """The cosine scores of `triton_step`, in ``metric``'s dtype (`cosine_scores` up to rounding).

    Shapes:
        metric: [B, N, Ck]
        returns: [B, |A|, |B|]
    """
    _check_plan(metric.shape[1], num_prefix, 1)
    return torch.ops.tofu_edge.triton_scores(metric, num_prefix)


def triton_match(scores: torch.Tensor, num_tokens: int, num_prefix: int, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`match_scores` in one launch, in the plugin contract's form: equal to its ``order`` / ``dst_slot`` on the
    same scores, ties and NaN included.

    Shapes:
        scores: [B, |A|, |B|]
        returns: [B, N] (int64), [B, r] (int64)
    """
    _check_plan(num_tokens, num_prefix, r)
    if scores.shape[1:] != split_sizes(num_tokens, num_prefix):
        raise ValueError(f"scores {tuple(scores.shape)} are not [B, |A|, |B|] of N = {num_tokens}, P = {num_prefix}")
    return torch.ops.tofu_edge.triton_match(scores, num_tokens, num_prefix, r)


def triton_merge(
    x: torch.Tensor, size: torch.Tensor | None, order: torch.Tensor, dst_slot: torch.Tensor, op: StepOp
) -> tuple[torch.Tensor, torch.Tensor]:
    """`fuse_tokens` of a plan in the plugin contract's form (any kept slot may absorb sources), in one launch.

    Shapes:
        x: [B, N, C]
        size: [B, N, 1]
        order: [B, N] (int32 or int64)
        dst_slot: [B, r] (int32 or int64)
        returns: [B, N - r, C], [B, N - r, 1]
    """
    batch, num_tokens, _ = x.shape
    if order.shape != (batch, num_tokens) or dst_slot.shape[0] != batch or not 1 <= dst_slot.shape[1] < num_tokens:
        raise ValueError(f"order {tuple(order.shape)} and dst_slot {tuple(dst_slot.shape)} must be [B, N], [B, r]")
    return torch.ops.tofu_edge.triton_merge(x, size, order, dst_slot, 0, _MODES[StepOp(op)])


def _check_plan(num_tokens: int, num_prefix: int, r: int) -> None:
    num_a, num_b = split_sizes(num_tokens, num_prefix) if 0 <= num_prefix < num_tokens else (0, 0)
    if num_b < 1 or not 1 <= r <= num_a:
        raise ValueError(
            f"r = {r} must be in [1, |A| = {num_a}] with |B| = {num_b} >= 1 (N = {num_tokens}, P = {num_prefix})"
        )


# --- kernels and launches -------------------------------------------------------------------------------------------


def _kernels() -> ModuleType | None:
    """`tofu_edge.ops.triton_kernels`, or None where triton cannot be imported."""
    try:
        return importlib.import_module("tofu_edge.ops.triton_kernels")
    except ImportError:
        return None


def _interpreted(kernels: ModuleType) -> bool:
    """Whether ``triton.jit`` made the kernels interpreted (``TRITON_INTERPRET=1`` when they were defined)."""
    return type(kernels.match_kernel).__name__ == "InterpretedFunction"


def _launcher(device: torch.device):
    """The kernels for tensors on ``device`` and the context to launch them in, or an error saying why not."""
    kernels = _kernels()
    if kernels is None:
        raise RuntimeError("the Triton fusion step needs triton (pip install triton)")
    if device.type == "cpu" and not _interpreted(kernels):
        raise RuntimeError(
            "the Triton fusion step runs on CPU tensors only in Triton's interpreter: set TRITON_INTERPRET=1 before "
            "tofu_edge.ops.triton_kernels is first imported, or use CUDA tensors"
        )
    return kernels, torch.cuda.device(device) if device.type == "cuda" else nullcontext()  # Triton: current GPU


def _block(n: int, limit: int) -> int:
    """The power of two covering ``n``, at most ``limit``."""
    return max(1, min(1 << max(0, n - 1).bit_length(), limit))


def _run_scores(metric: torch.Tensor, num_prefix: int) -> torch.Tensor:
    kernels, device = _launcher(metric.device)
    metric = metric.contiguous()
    batch, num_tokens, channels = metric.shape
    (num_a, num_b), (a_start, b_start) = split_sizes(num_tokens, num_prefix), split_starts(num_prefix)
    unit_a, unit_b = metric.new_empty(batch, num_a, channels), metric.new_empty(batch, num_b, channels)
    block_c = _block(channels, _LIMITS["metric_channels"])
    block_t = _block(max(num_a, num_b), max(1, 2048 // block_c))
    grid = (-(-max(num_a, num_b) // block_t), batch)
    args = (metric, unit_a, unit_b, num_tokens, num_a, num_b, a_start, b_start, channels)
    with device:
        kernels.unit_rows_kernel[grid](*args, BLOCK_T=block_t, BLOCK_C=block_c, num_warps=4)
    return torch.bmm(unit_a, unit_b.transpose(1, 2))  # cuBLAS, in metric's dtype as cosine_scores


def _run_match(scores: torch.Tensor, num_tokens: int, num_prefix: int, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    kernels, device = _launcher(scores.device)
    scores = scores.contiguous()
    batch, num_a, num_b = scores.shape
    a_start, b_start = split_starts(num_prefix)
    order = scores.new_empty(batch, num_tokens, dtype=torch.int64)
    dst_slot = scores.new_empty(batch, r, dtype=torch.int64)
    best = scores.new_empty(batch, num_a, dtype=torch.float32)  # the kernel's scratch: best score and partner
    best_dst = scores.new_empty(batch, num_a, dtype=torch.int32)
    block_a, block_b = _block(num_a, _LIMITS["rows"]), _block(max(num_a, num_b), _LIMITS["partners"])
    args = (scores, best, best_dst, order, dst_slot, num_tokens, num_prefix, num_a, num_b, a_start, b_start, r)
    with device:
        warps = 8 if block_a * block_b >= 4096 else 4
        kernels.match_kernel[(batch,)](*args, BLOCK_A=block_a, BLOCK_B=block_b, num_warps=warps)
    return order, dst_slot


def _run_merge(
    x: torch.Tensor, size: torch.Tensor | None, order: torch.Tensor, dst_slot: torch.Tensor, first_dst: int, mode: int
) -> tuple[torch.Tensor, torch.Tensor]:
    kernels, device = _launcher(x.device)
    x, order, dst_slot = x.contiguous(), order.contiguous(), dst_slot.contiguous()
    batch, num_tokens, channels = x.shape
    r = dst_slot.shape[1]
    x_out, size_out = _tokens_shapes(x, size, r)
    block_c = _block(channels, _LIMITS["channels"])
    block_r = _block(r, max(1, _LIMITS["tile"] // block_c))
    sizes = x if size is None else size.contiguous()  # never read without sizes
    args = (x, sizes, order, dst_slot, x_out, size_out, num_tokens, first_dst, r, channels)
    blocks = dict(BLOCK_R=block_r, BLOCK_C=block_c, num_warps=4 if block_c >= 256 else 2)
    with device:
        kernels.merge_kernel[(num_tokens - r, batch)](*args, MODE=mode, HAS_SIZE=size is not None, **blocks)
    return x_out, size_out


def _run_step(
    x: torch.Tensor, size: torch.Tensor | None, metric: torch.Tensor, num_prefix: int, r: int, mode: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    num_tokens = x.shape[1]
    order, dst_slot = _run_match(_run_scores(metric, num_prefix), num_tokens, num_prefix, r)
    first_dst = num_tokens - r - split_sizes(num_tokens, num_prefix)[1]  # slots below absorb nothing
    return *_run_merge(x, size, order, dst_slot, first_dst, mode), order, dst_slot


# --- registration: one opaque node per op, with the output shapes for tracing ---------------------------------------


def _scores_shape(metric, num_prefix):
    num_a, num_b = split_sizes(metric.shape[1], num_prefix)
    return metric.new_empty(metric.shape[0], num_a, num_b)


def _match_shapes(scores, num_tokens, num_prefix, r):
    batch = scores.shape[0]
    return scores.new_empty(batch, num_tokens, dtype=torch.int64), scores.new_empty(batch, r, dtype=torch.int64)


def _merge_shapes(x, size, order, dst_slot, first_dst, mode):
    return _tokens_shapes(x, size, dst_slot.shape[1])


def _step_shapes(x, size, metric, num_prefix, r, mode):
    return *_tokens_shapes(x, size, r), *_match_shapes(x, x.shape[1], num_prefix, r)


def _tokens_shapes(x: torch.Tensor, size: torch.Tensor | None, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch, num_tokens, channels = x.shape
    size_dtype = x.dtype if size is None else size.dtype
    return x.new_empty(batch, num_tokens - r, channels), x.new_empty(batch, num_tokens - r, 1, dtype=size_dtype)


def _register(name: str, run, fake, schema: str) -> None:
    op = torch.library.custom_op(
        f"tofu_edge::{name}", run, mutates_args=(), device_types=("cpu", "cuda"), schema=schema
    )
    op.register_fake(fake)


_TOKENS = "Tensor x, Tensor? size"
_register("triton_scores", _run_scores, _scores_shape, "(Tensor metric, int num_prefix) -> Tensor")
_register(
    "triton_match",
    _run_match,
    _match_shapes,
    "(Tensor scores, int num_tokens, int num_prefix, int r) -> (Tensor, Tensor)",
)
_register(
    "triton_merge",
    _run_merge,
    _merge_shapes,
    f"({_TOKENS}, Tensor order, Tensor dst_slot, int first_dst, int mode) -> (Tensor, Tensor)",
)
_register(
    "triton_step",
    _run_step,
    _step_shapes,
    f"({_TOKENS}, Tensor metric, int num_prefix, int r, int mode) -> (Tensor, Tensor, Tensor, Tensor)",
)
