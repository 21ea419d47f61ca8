"""TofuMatch / TofuMerge kernels against the PyTorch ops of one fusion step, on the same inputs and device.

One step of DeiT-S / ViT-B's first block: ``N = 197`` tokens, ``P = 1`` (the class token), ``r = 13``; scores
``[B, 98, 98]``, tokens ``[B, 197, C]`` with ``C = 384`` (DeiT-S) or ``768`` (ViT-B). Three comparisons:

- ``match``: `tofu_edge.ops.match.match_scores` against TofuMatch (``C`` plays no part);
- ``merge``: `tofu_edge.ops.merge.fuse_tokens` against TofuMerge on the same index plan, per mode;
- ``step``: both together (scores to fused tokens), what the plugin flavour runs per block.

Each side is timed two ways: ``eager`` (calls back to back from Python, what an eager model pays per call,
launch overhead included) and ``graph`` (a CUDA graph of the calls: device time). Inputs rotate over several
sets, enough to exceed the L2 cache where memory allows (``l2_resident`` says where they still fit). Before
timing, the kernel's outputs are compared with the PyTorch ops' (indices exactly; tokens within tolerance).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from benchmarks.gpu.timing import Clock, capture_graph, count_for, graph_samples, stats, throughput_samples
from tofu_edge.config import StepOp
from tofu_edge.ops.match import TokenMatch, cosine_scores, match_scores
from tofu_edge.ops.merge import fuse_tokens

__all__ = ["KernelCase", "kernel_cases", "run_kernel_timings", "STEP"]

STEP = {"num_tokens": 197, "num_prefix": 1, "r": 13}
CHANNELS = {"deit_s": 384, "vit_b": 768}
BATCHES = (1, 8, 64)
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
ALL_DTYPES = tuple(DTYPES)
ALL_CHANNELS = tuple(CHANNELS.values())
METRIC_DIM = 64  # the head width of DeiT-S and ViT-B: the matching metric's width
MIN_CALLS_PER_GRAPH = 8
MAX_SETS = 32
ROTATE_L2_FACTOR = 3  # rotate over at least this many L2 sizes of inputs where memory allows
MAX_ROTATION_BYTES = 2 << 30
FP32_TOL = 1e-5
FP16_TOL = 2e-3  # one rounding to fp16 of an fp32-accumulated result
DEFAULT_L2_BYTES = 50 << 20


@dataclass(frozen=True)
class KernelCase:
    """One comparison: which op, element type, batch, width and merge mode (None for match)."""

    kernel: str
    dtype: str
    batch: int
    channels: int | None
    mode: str | None

    @property
    def name(self) -> str:
        parts = [
            self.kernel,
            self.mode or "",
            self.dtype,
            f"C{self.channels}" if self.channels else "",
            f"b{self.batch}",
        ]
        return " ".join(p for p in parts if p)


def kernel_cases(batches=BATCHES, dtypes=ALL_DTYPES, channels=ALL_CHANNELS) -> list[KernelCase]:
    """Every case, most informative first (so a budget cut drops the least): match, step, then merge by mode."""
    cases = [KernelCase("match", d, b, None, None) for d in dtypes for b in batches]
    for mode in ("mlerp", "mean"):
        cases += [KernelCase("step", d, b, c, mode) for d in dtypes for c in channels for b in batches]
    for mode in ("mlerp", "mean", "prune"):
        cases += [KernelCase("merge", d, b, c, mode) for d in dtypes for c in channels for b in batches]
    return cases


@dataclass
class _InputSet:
    scores: torch.Tensor
    match: TokenMatch
    x: torch.Tensor | None = None
    size: torch.Tensor | None = None
    order32: torch.Tensor | None = None
    dst32: torch.Tensor | None = None
    order_out: torch.Tensor | None = None
    dst_out: torch.Tensor | None = None
    x_out: torch.Tensor | None = None
    size_out: torch.Tensor | None = None

    def nbytes(self) -> int:
        tensors = [self.scores, self.x, self.size, self.order32, self.dst32]
        tensors += [self.order_out, self.dst_out, self.x_out, self.size_out]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _make_set(case: KernelCase, device: torch.device, seed: int) -> _InputSet:
    n, p, r = STEP["num_tokens"], STEP["num_prefix"], STEP["r"]
    dtype = DTYPES[case.dtype]
    generator = torch.Generator(device=device).manual_seed(seed)
    metric = torch.randn(case.batch, n, METRIC_DIM, generator=generator, device=device)
    scores = cosine_scores(metric, p).to(dtype).contiguous()
    match = match_scores(scores, n, p, r)
    item = _InputSet(scores=scores, match=match)
    item.order_out = torch.empty(case.batch, n, dtype=torch.int32, device=device)
    item.dst_out = torch.empty(case.batch, r, dtype=torch.int32, device=device)
    if case.kernel != "match":
        c = case.channels
        scale = torch.rand(case.batch, n, 1, generator=generator, device=device) * 3
        item.x = (torch.randn(case.batch, n, c, generator=generator, device=device) * scale).to(dtype)
        sizes = torch.randint(1, 5, (case.batch, n, 1), generator=generator, device=device)
        item.size = sizes.to(dtype)
        item.order32 = match.order.to(torch.int32).contiguous()
        item.dst32 = match.dst_slot.to(torch.int32).contiguous()
        item.x_out = torch.empty(case.batch, n - r, c, dtype=dtype, device=device)
        item.size_out = torch.empty(case.batch, n - r, 1, dtype=dtype, device=device)
    return item


def _torch_fn(case: KernelCase, item: _InputSet) -> Callable[[], object]:
    n, p, r = STEP["num_tokens"], STEP["num_prefix"], STEP["r"]
    if case.kernel == "match":
        return lambda: match_scores(item.scores, n, p, r)
    op = StepOp(case.mode)
    if case.kernel == "merge":
        return lambda: fuse_tokens(item.x, item.size, item.match, op)
    return lambda: fuse_tokens(item.x, item.size, match_scores(item.scores, n, p, r), op)


def _cuda_fn(case: KernelCase, item: _InputSet, kernels) -> Callable[[], object]:
    n, p, r = STEP["num_tokens"], STEP["num_prefix"], STEP["r"]
    if case.kernel == "match":
        return lambda: kernels.match(item.scores, n, p, r, order=item.order_out, dst_slot=item.dst_out)
    op = StepOp(case.mode)
    if case.kernel == "merge":
        return lambda: kernels.merge(
            item.x, item.size, item.order32, item.dst32, op, x_out=item.x_out, size_out=item.size_out
        )

    def step():
        kernels.match(item.scores, n, p, r, order=item.order_out, dst_slot=item.dst_out)
        return kernels.merge(
            item.x, item.size, item.order_out, item.dst_out, op, x_out=item.x_out, size_out=item.size_out
        )

    return step


def _agreement(case: KernelCase, item: _InputSet, kernels) -> dict:
    """The kernel's outputs against the PyTorch ops' on one input set (indices exactly, tokens by tolerance)."""
    n, p, r = STEP["num_tokens"], STEP["num_prefix"], STEP["r"]
    _cuda_fn(case, item, kernels)()
    torch.cuda.synchronize()
    expected = match_scores(item.scores.float(), n, p, r)  # fp16 -> fp32 is exact: the same ranking
    if case.kernel == "match":
        equal = torch.equal(item.order_out.long(), expected.order) and torch.equal(
            item.dst_out.long(), expected.dst_slot
        )
        return {"agrees": bool(equal), "indices_equal": bool(equal)}
    match = expected if case.kernel == "step" else item.match
    indices_equal = None
    if case.kernel == "step":
        indices_equal = torch.equal(item.order_out.long(), expected.order) and torch.equal(
            item.dst_out.long(), expected.dst_slot
        )
    ref_x, ref_size = fuse_tokens(item.x.float(), item.size.float(), match, StepOp(case.mode))
    error = (item.x_out.float() - ref_x).abs()
    tolerance = FP32_TOL if case.dtype == "fp32" else FP16_TOL
    close = bool((error <= tolerance + tolerance * ref_x.abs()).all())
    size_equal = torch.equal(item.size_out.float(), ref_size)
    agrees = close and size_equal and indices_equal is not False
    return {
        "agrees": bool(agrees),
        "indices_equal": indices_equal,
        "max_abs_error": float(error.max()),
        "sizes_equal": bool(size_equal),
    }


def _time_side(clock: Clock, fns: list[Callable[[], object]], budget_s: float, use_graph: bool) -> dict:
    """Eager (back-to-back) and, on CUDA, graph timings of one side over the rotated input sets."""
    for fn in fns:  # warm-up: module loading, lazy init, allocator
        fn()
    probe = throughput_samples(clock, fns, 1)[0]
    blocks = count_for(probe * len(fns), budget_s / 2, low=3, high=60)
    result = {"eager": stats(throughput_samples(clock, fns, blocks))}
    if not use_graph:
        return result
    calls = [fns[i % len(fns)] for i in range(max(MIN_CALLS_PER_GRAPH, len(fns)))]
    try:
        graph, _ = capture_graph(lambda: [fn() for fn in calls])
    except Exception as error:  # a capture failure is a result, not the end of the phase
        result["graph"] = {"error": f"{type(error).__name__}: {error}"}
        return result
    probe = graph_samples(clock, graph, len(calls), 2)[-1]
    replays = count_for(probe * len(calls), budget_s / 2, low=5, high=200)
    result["graph"] = stats(graph_samples(clock, graph, len(calls), replays))
    result["graph"]["calls_per_replay"] = len(calls)
    del graph
    return result


def run_kernel_timings(
    kernels,
    device: torch.device,
    budget_s: float,
    cases: list[KernelCase] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Time every case on both sides within ``budget_s``; cases past the budget are listed as skipped.

    Args:
        kernels: A `CudaKernels`, or None to time the PyTorch side only (no library, or no GPU).
        device: Where to run (``cuda`` for real timings; ``cpu`` runs the PyTorch side with host clocks).
        budget_s: Seconds for the whole phase.
        cases: What to time; None means `kernel_cases()`.
        log: Progress lines.

    Returns:
        ``{"step": ..., "results": [...], "skipped": [...], "l2_bytes": ...}``.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    clock = Clock(device)
    cases = kernel_cases() if cases is None else cases
    l2_bytes = DEFAULT_L2_BYTES
    if cuda:
        l2_bytes = int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", DEFAULT_L2_BYTES))
    deadline = time.perf_counter() + budget_s
    results, skipped = [], []
    for index, case in enumerate(cases):
        left = deadline - time.perf_counter()
        if left <= 0:
            skipped.append(case.name)
            continue
        per_side = left / (len(cases) - index) / (2 if kernels is not None else 1)
        entry = {
            "kernel": case.kernel,
            "mode": case.mode,
            "dtype": case.dtype,
            "batch": case.batch,
            "channels": case.channels,
        }
        try:
            first = _make_set(case, device, seed=index * 1000)
            set_bytes = first.nbytes()
            sets = 1
            if cuda:
                wanted = math.ceil(ROTATE_L2_FACTOR * l2_bytes / max(set_bytes, 1))
                sets = max(1, min(MAX_SETS, wanted, MAX_ROTATION_BYTES // max(set_bytes, 1)))
            items = [first] + [_make_set(case, device, seed=index * 1000 + s) for s in range(1, sets)]
            entry.update(
                {
                    "input_sets": sets,
                    "bytes_per_set": set_bytes,
                    "l2_resident": sets * set_bytes <= l2_bytes,
                }
            )
            if kernels is not None:
                entry.update(_agreement(case, first, kernels))
                entry["cuda"] = _time_side(clock, [_cuda_fn(case, item, kernels) for item in items], per_side, cuda)
            entry["torch"] = _time_side(clock, [_torch_fn(case, item) for item in items], per_side, cuda)
            entry.update(_speedups(entry))
            del items, first
        except Exception as error:  # record and go on with the next case
            entry["error"] = f"{type(error).__name__}: {error}"
        results.append(entry)
        log(_line(entry))
    return {"step": dict(STEP), "l2_bytes": l2_bytes, "results": results, "skipped": skipped}


def _median(entry: dict, side: str, kind: str) -> float | None:
    value = entry.get(side, {}).get(kind, {})
    return value.get("median_us") if isinstance(value, dict) else None


def _speedups(entry: dict) -> dict:
    out = {}
    for kind in ("eager", "graph"):
        cuda, ref = _median(entry, "cuda", kind), _median(entry, "torch", kind)
        out[f"speedup_{kind}"] = ref / cuda if cuda and ref else None
    return out


def _line(entry: dict) -> str:
    case = KernelCase(entry["kernel"], entry["dtype"], entry["batch"], entry["channels"], entry["mode"])
    if "error" in entry:
        return f"  {case.name}: ERROR {entry['error']}"
    parts = [f"  {case.name}:"]
    for side in ("cuda", "torch"):
        for kind in ("graph", "eager"):
            value = _median(entry, side, kind)
            if value is not None:
                parts.append(f"{side} {kind} {value:.1f} us")
    if entry.get("agrees") is not None:
        parts.append("agrees" if entry["agrees"] else "DISAGREES")
    return " ".join(parts)
