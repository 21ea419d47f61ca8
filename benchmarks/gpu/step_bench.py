"""One whole fusion step (scores, match, merge) on each step backend, timed side by side in CUDA graphs.

The step of DeiT-S / ViT-B's first block: ``N = 197`` tokens, ``P = 1``, ``r = 13``, metric width 64, tokens of
width ``C = 384`` / ``768``, MLERP, fp16. Backends (`tofu_edge.patch.steps`): ``torch`` (the PyTorch ops, ~50
kernels), ``triton`` (`tofu_edge.ops.triton_step`: four launches) and ``kernels`` (the TensorRT plugin kernels through
``libtofu_edge_kernels.so``, the scores as a PyTorch matmul). Each backend's step is captured into a CUDA graph of
``CALLS_PER_GRAPH`` steps over rotating input sets; one runner call replays it and returns the device time per step
(CUDA events), and the runners go round-robin through `tofu_edge.measure.measure_interleaved`. Before timing, every
backend's tokens are compared with the PyTorch ops'. On the CPU (``--smoke``) the same code runs the ``torch``
backend eagerly, host clocks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from benchmarks.gpu.timing import capture_graph
from tofu_edge.config import StepOp
from tofu_edge.measure import Runner, measure_interleaved, paired_speedup
from tofu_edge.patch.steps import torch_step, triton_fusion_step
from tofu_edge.stats import LatencyStats

__all__ = ["STEP", "run_step_timings"]

STEP = {"num_tokens": 197, "num_prefix": 1, "r": 13, "metric_dim": 64, "op": "mlerp"}
CHANNELS = {"deit_s": 384, "vit_b": 768}
BATCHES = (1, 8, 64, 256)
CALLS_PER_GRAPH = 8
SETS = 4  # rotating input sets per graph, so consecutive steps do not reread one set from L2
FP16_TOL = 2e-3


def _inputs(batch: int, channels: int, device: torch.device, dtype: torch.dtype, seed: int) -> tuple:
    generator = torch.Generator(device=device).manual_seed(seed)
    n = STEP["num_tokens"]
    scale = torch.rand(batch, n, 1, generator=generator, device=device) * 3
    x = (torch.randn(batch, n, channels, generator=generator, device=device) * scale).to(dtype)
    size = torch.randint(1, 5, (batch, n, 1), generator=generator, device=device).to(dtype)
    metric = torch.randn(batch, n, STEP["metric_dim"], generator=generator, device=device).to(dtype)
    return x, size, metric


def _steps(kernels) -> dict[str, Callable]:
    steps = {"torch": torch_step, "triton": triton_fusion_step}
    if kernels is not None:
        from tofu_edge.export.cuda_kernels import KernelStep

        steps["kernels"] = KernelStep(kernels)
    return steps


def _agreement(step: Callable, inputs: tuple) -> dict:
    """The backend's tokens against the PyTorch ops' on the same inputs (in fp32)."""
    x, size, metric = inputs
    args = (STEP["num_prefix"], STEP["r"], StepOp(STEP["op"]))
    want, _, _ = torch_step(x.float(), size.float(), metric.float(), *args)
    got, got_size, _ = step(x, size, metric, *args)
    error = (got.float() - want).abs()
    return {"max_abs_error": float(error.max()), "agrees": bool((error <= FP16_TOL + FP16_TOL * want.abs()).all())}


def _runner(name: str, step: Callable, sets: list[tuple], batch: int, graph: bool) -> tuple[Runner, object]:
    """A runner whose call runs ``CALLS_PER_GRAPH`` steps (a CUDA graph replay on CUDA) and returns ms per step."""
    args = (STEP["num_prefix"], STEP["r"], StepOp(STEP["op"]))

    def steps():
        return [step(*sets[i % len(sets)], *args) for i in range(CALLS_PER_GRAPH)]

    if not graph:  # the CPU dry run: synchronous calls, the wall clock around them (ms per CALLS_PER_GRAPH steps)
        return Runner(name, lambda: steps() and None, batch), None
    captured, outputs = capture_graph(steps)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def replay() -> float:
        start.record()
        captured.replay()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / CALLS_PER_GRAPH

    return Runner(name, replay, batch), (captured, outputs)


def run_step_timings(
    kernels, device: torch.device, budget_s: float, batches=BATCHES, channels=CHANNELS, log=print
) -> dict:
    """Time one step per backend, model width and batch; ``{"results": [...], "errors": [...]}``.

    Each row: width, batch, backend, `LatencyStats` in µs per step (device time on CUDA) and the speed-up over the
    ``torch`` backend (median of per-round ratios).
    """
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    steps = _steps(kernels) if cuda else {"torch": torch_step}
    groups = [(short, c, b) for short, c in channels.items() for b in batches]
    results, errors = [], []
    for short, width, batch in groups:
        sets = [_inputs(batch, width, device, dtype, seed) for seed in range(SETS)]
        runners, keep = [], []
        for name, step in steps.items():
            try:
                agreement = _agreement(step, sets[0])
                runner, held = _runner(name, step, sets, batch, graph=cuda)
            except Exception as error:  # a backend that fails is a result; the others go on
                errors.append(
                    {"model": short, "batch": batch, "backend": name, "error": f"{type(error).__name__}: {error}"}
                )
                continue
            runners.append((runner, agreement))
            keep.append(held)
        if not runners:
            continue
        samples = measure_interleaved([r for r, _ in runners], warmup=3, seconds=budget_s / len(groups))
        for runner, agreement in runners:
            stats = LatencyStats.from_samples(samples[runner.name], batch)
            speedup = paired_speedup(samples["torch"], samples[runner.name]) if "torch" in samples else None
            row = {"model": short, "channels": width, "batch": batch, "backend": runner.name, **agreement}
            row.update({"median_us": stats.median_ms * 1e3, "p90_us": stats.p90_ms * 1e3, "samples": stats.samples})
            row["speedup_over_torch"] = speedup
            results.append(row)
        log(
            f"step {short} b={batch}: "
            + ", ".join(f"{r['backend']} {r['median_us']:.1f} µs" for r in results[-len(runners) :])
        )
        del keep
        if cuda:
            torch.cuda.empty_cache()
    return {
        "step": {**STEP, "dtype": str(dtype).removeprefix("torch.")},
        "timing": "CUDA graphs of 8 steps, CUDA events, measure_interleaved" if cuda else "eager, host clock",
        "results": results,
        "errors": errors,
    }
