"""One denoising step, unfused vs ours (prune / mean / MLERP) vs tomesd's own patch, interleaved in one run.

Usage:
    python -m benchmarks.diffusion_latency                         # CPU: PyTorch eager + onnxruntime, ~1 h
    python -m benchmarks.diffusion_latency --models dit --output benchmarks/results/diffusion_latency_dit.json
    python -m benchmarks.diffusion_latency --device cuda --sizes 64,128 --batch 2 --output FILE   # GPU, fp16

Models (random weights, nothing downloaded): SD 1.5's UNet (diffusers' UNet2DConditionModel defaults with
cross_attention_dim 768, i.e. block_out_channels (320, 640, 1280, 1280), 8 heads; 64x64 latents = 512 px, 77 text
tokens) and DiT-S/2 (DiTTransformer2DModel, 12 blocks, 6 heads of 64, 32x32 latents = 256 tokens). Fusion at the
full-resolution level (tomesd's default ``max_downsample=1``), self-attention only for the UNet; for DiT both
self-attention only and attention + MLP, in PyTorch and in onnxruntime, side by side (``--models dit`` runs DiT
alone). Variants share one set of weights (shallow module copies), so one process holds the model once.
onnxruntime: 2 threads, spinning off (`tofu_edge.export.ort_session`); every graph is exported with
`tofu_edge.diffusion.export_onnx` (parity-checked). Timing, statistics and the environment record are
`tofu_edge.measure`'s: runners called round-robin (`measure_interleaved`), `LatencyStats`, speed-ups as medians of
per-round ratios (`paired_speedup`), `describe_environment`; the results file also records the command line.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch
from diffusers import DiTTransformer2DModel, UNet2DConditionModel

import tofu_edge.diffusion as td
from benchmarks.common import RESULTS, environment, timing_parser, write_json
from tofu_edge.measure import LatencyStats, Runner, measure_interleaved, ort_runner, paired_speedup, torch_runner

SD15 = dict(sample_size=64, cross_attention_dim=768)  # the rest of SD 1.5's UNet config is diffusers' default
DIT_S2 = dict(
    num_attention_heads=6,
    attention_head_dim=64,
    in_channels=4,
    num_layers=12,
    sample_size=32,
    patch_size=2,
    num_embeds_ada_norm=1000,
)
RATIOS = (0.3, 0.5)
OPS = ("prune", "mean", "mlerp")
MODELS = ("sd15", "dit")  # --models: SD 1.5's UNet, DiT-S/2
SCRATCH = Path("build/diffusion_latency")


def shared_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the module tree that shares every parameter and buffer with ``model``."""
    memo = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo)


def torch_variants(model: torch.nn.Module, specs: list[tuple[str, dict | None]], size: int) -> list:
    """``(name, module)``: ours through `tofu_edge.diffusion.apply`, tomesd through ``tomesd.apply_patch``."""
    import tomesd

    out = []
    for name, spec in specs:
        module = shared_copy(model)
        if spec is not None and spec.get("tomesd"):
            tomesd.apply_patch(module, ratio=spec["ratio"], max_downsample=spec.get("max_downsample", 1))
        elif spec is not None:
            td.apply(module, td.DiffusionFusionConfig(**spec), sample_size=size)
        out.append((name, module))
    return out


def step_inputs(model: torch.nn.Module, size: int, batch: int, device: str, dtype: torch.dtype) -> dict:
    """One step's inputs by keyword (UNet: sample + 77 text tokens; DiT: hidden_states + class labels). The latent
    is passed positionally (``latent`` key) since tomesd's hook reads the first positional argument."""
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(batch, model.config.in_channels, size, size, generator=generator).to(device, dtype)
    timestep = torch.full((batch,), 500.0, device=device)
    if isinstance(model, UNet2DConditionModel):
        context = torch.randn(batch, 77, model.config.cross_attention_dim, generator=generator).to(device, dtype)
        return {"latent": latent, "timestep": timestep, "encoder_hidden_states": context, "return_dict": False}
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    return {"latent": latent, "timestep": timestep, "class_labels": labels, "return_dict": False}


def step_runner(name: str, module: torch.nn.Module, inputs: dict) -> Runner:
    """`tofu_edge.measure.torch_runner` on one step: the wall clock on the CPU, CUDA events on a GPU. The latent is
    the positional argument (tomesd's hook reads it), the other inputs are bound by keyword."""
    rest = {k: v for k, v in inputs.items() if k != "latent"}
    return torch_runner(name, lambda latent: module(latent, **rest), inputs["latent"])


def summarize(samples: dict[str, list[float]], baseline: str, extra: dict | None = None) -> list[dict]:
    rows = []
    for name, values in samples.items():
        stats = LatencyStats.from_samples(values).to_dict()
        rows.append(
            {
                "variant": name,
                **stats,
                "speedup": paired_speedup(samples[baseline], values),
                **(extra or {}).get(name, {}),
            }
        )
        print(f"  {name:28s} {stats['median_ms']:9.1f} ms  {rows[-1]['speedup']:.3f}x", file=sys.stderr, flush=True)
    return rows


def unet_specs(ops: tuple[str, ...] = OPS) -> list[tuple[str, dict | None]]:
    specs: list[tuple[str, dict | None]] = [("unfused", None)]
    for ratio in RATIOS:
        specs += [(f"ours {op} {ratio}", {"ratio": ratio, "op": op}) for op in ops]
        specs.append((f"tomesd {ratio}", {"tomesd": True, "ratio": ratio}))
    return specs


def dit_specs() -> list[tuple[str, dict | None]]:
    specs: list[tuple[str, dict | None]] = [("unfused", None)]
    for ratio in RATIOS:
        specs.append((f"ours mean {ratio} attn", {"ratio": ratio, "op": "mean"}))
        specs += [(f"ours {op} {ratio} attn+mlp", {"ratio": ratio, "op": op, "merge_mlp": True}) for op in OPS]
        specs.append((f"tomesd {ratio}", {"tomesd": True, "ratio": ratio, "max_downsample": 2}))
    return specs


def bench_torch(model, specs, size, batch, device, dtype, warmup, iterations) -> list[dict]:
    """Time every variant of ``specs`` in eager PyTorch, interleaved with the unfused model."""
    inputs = step_inputs(model, size, batch, device, dtype)
    runners = [step_runner(n, m, inputs) for n, m in torch_variants(model, specs, size)]
    return summarize(measure_interleaved(runners, warmup=warmup, iterations=iterations), "unfused")


def bench_ort(model, specs, size, warmup, iterations) -> list[dict]:
    """Export each variant (parity-checked), then time the sessions interleaved (2 threads, spinning off)."""
    from tofu_edge.export.session import ort_session

    SCRATCH.mkdir(parents=True, exist_ok=True)
    runners, extra = [], {}
    for name, spec in specs:
        path = SCRATCH / f"{type(model).__name__}_{name.replace(' ', '_')}.onnx"
        extra[name] = export_variant(model, path, spec, size)
        parity = extra[name]["parity_min_cosine"]
        print(f"  exported {name} in {extra[name]['export_seconds']:.0f} s, parity {parity}", file=sys.stderr)
        feeds = {k: v.numpy() for k, v in _export_feed(model, size).items()}
        runners.append(ort_runner(name, ort_session(path, threads=2, spinning=False), feeds))
    return summarize(measure_interleaved(runners, warmup=warmup, iterations=iterations), "unfused", extra)


def export_variant(model: torch.nn.Module, path: Path, spec: dict | None, size: int) -> dict:
    """Export one variant (parity-checked), or reuse a file an earlier run wrote with the same plan."""
    config = td.DiffusionFusionConfig(**spec) if spec else td.DiffusionFusionConfig(ratio=0.0)
    report_path = path.with_suffix(".json")
    if path.exists() and report_path.exists():
        saved = json.loads(report_path.read_text())
        if saved["plan"]["config"] == config.to_dict() and saved["plan"]["sample_size"] == [size, size]:
            parity = {s["name"]: s["min_cosine"] for s in saved["parity"]["sets"]}
            return {"export_seconds": saved["seconds"]["total"], "parity_min_cosine": parity, "reused": True}
    started = time.perf_counter()
    report = td.export_onnx(model, path, config, sample_size=size, parity_runs=1)
    parity = {s.name: s.min_cosine for s in report.parity.sets}
    return {"export_seconds": time.perf_counter() - started, "parity_min_cosine": parity}


def _export_feed(model: torch.nn.Module, size: int) -> dict[str, torch.Tensor]:
    from tofu_edge.diffusion.inputs import example_inputs, input_family

    return example_inputs(model, input_family(model), (size, size), 1, None, seed=0)


def tomesd_onnx_attempt() -> dict:
    """What torch's exporters make of tomesd's patch (a tiny SD-layout UNet, batch 1 and 2)."""
    import tomesd

    from tofu_edge.diffusion.models import create_diffusion_model

    model = create_diffusion_model("tiny-unet")
    tomesd.apply_patch(model, ratio=0.5)
    out = {}
    for batch in (1, 2):
        inputs = step_inputs(model, 16, batch, "cpu", torch.float32)
        args = (inputs["latent"], inputs["timestep"], inputs["encoder_hidden_states"])
        path = SCRATCH / f"tomesd_b{batch}.onnx"
        try:
            program = torch.onnx.export(model, args, dynamo=True, opset_version=18, verbose=False)
            program.save(str(path))
            import onnx

            from tofu_edge.export.graph import check_portable

            check_portable(onnx.load(str(path)), dynamic_batch=False)
            out[f"batch {batch}"] = "exported and passed the portable check"
        except Exception as error:  # record what happens, whatever it is
            out[f"batch {batch}"] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
    return out


def main() -> None:
    parser = timing_parser(__doc__)  # re-executes with the steady allocator first
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of sd15 (SD 1.5's UNet), dit (DiT-S/2)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", default="64", help="UNet latent sizes, comma-separated")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--torch-ops", default="prune,mean,mlerp", help="our ops timed in PyTorch on the UNet")
    parser.add_argument("--ort-ops", default="mean", help="ops exported for onnxruntime (each costs an SD export)")
    parser.add_argument("--skip-ort", action="store_true")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    models = args.models.split(",")
    if unknown := sorted(set(models) - set(MODELS)):
        parser.error(f"unknown --models {unknown}: choose from {', '.join(MODELS)}")
    torch.manual_seed(0)
    device, dtype = args.device, torch.float16 if args.device == "cuda" else torch.float32
    payload = {
        "command": shlex.join(["python", "-m", "benchmarks.diffusion_latency", *sys.argv[1:]]),
        "environment": environment(threads=torch.get_num_threads(), device=device),
        "load_before": os.getloadavg(),
        "setup": {"batch": args.batch, "dtype": str(dtype), "iterations": args.iterations, "warmup": args.warmup},
        "sections": [],
    }
    output = args.output or RESULTS / ("diffusion_latency.json" if device == "cpu" else "diffusion_latency_gpu.json")
    if "sd15" in models:
        run_unet(args, payload, output, dtype)
    if "dit" in models:
        run_dit(args, payload, output, dtype)
    payload["load_after"] = os.getloadavg()
    write_json(output, payload)


def run_unet(args, payload: dict, output: Path, dtype: torch.dtype) -> None:
    """SD 1.5's UNet at each ``--sizes`` latent: PyTorch, then (on the CPU) onnxruntime; written after each."""
    device, sections = args.device, payload["sections"]
    unet = UNet2DConditionModel(**SD15).to(device, dtype).eval()  # sizes are passed to apply/export explicitly
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"SD 1.5 UNet {size}x{size}, PyTorch {device}", file=sys.stderr)
        specs = unet_specs(tuple(args.torch_ops.split(",")))
        rows = bench_torch(unet, specs, size, args.batch, device, dtype, args.warmup, args.iterations)
        sections.append({"model": "SD 1.5 UNet", "latent": size, "runtime": f"pytorch {device}", "rows": rows})
        write_json(output, payload)  # after every section: a crash keeps what was measured
        if device == "cpu" and not args.skip_ort:
            print("SD 1.5 UNet, onnxruntime", file=sys.stderr)
            specs = [("unfused", None)] + [
                (f"ours {op} {r}", {"ratio": r, "op": op}) for r in RATIOS for op in args.ort_ops.split(",")
            ]
            rows = bench_ort(unet, specs, size, args.warmup, args.iterations)
            sections.append(
                {"model": "SD 1.5 UNet", "latent": size, "runtime": "onnxruntime cpu 2 threads", "rows": rows}
            )
            write_json(output, payload)


def run_dit(args, payload: dict, output: Path, dtype: torch.dtype) -> None:
    """DiT-S/2: PyTorch, then (on the CPU) onnxruntime with attention-only and attention + MLP side by side, and
    what torch's exporters make of tomesd's patch; written after each section."""
    device, sections = args.device, payload["sections"]
    dit = DiTTransformer2DModel(**DIT_S2).to(device, dtype).eval()
    iterations = args.iterations * 5
    print("DiT-S/2, PyTorch", file=sys.stderr)
    rows = bench_torch(dit, dit_specs(), 32, args.batch, device, dtype, args.warmup * 3, iterations)
    sections.append({"model": "DiT-S/2", "latent": 32, "runtime": f"pytorch {device}", "rows": rows})
    write_json(output, payload)  # after every section: a crash keeps what was measured
    if device == "cpu" and not args.skip_ort:
        print("DiT-S/2, onnxruntime", file=sys.stderr)
        specs: list[tuple[str, dict | None]] = [("unfused", None)]
        for r in RATIOS:
            for op in args.ort_ops.split(","):
                specs.append((f"ours {op} {r} attn", {"ratio": r, "op": op}))
                specs.append((f"ours {op} {r} attn+mlp", {"ratio": r, "op": op, "merge_mlp": True}))
        rows = bench_ort(dit, specs, 32, args.warmup * 3, iterations)
        sections.append({"model": "DiT-S/2", "latent": 32, "runtime": "onnxruntime cpu 2 threads", "rows": rows})
        write_json(output, payload)
        payload["tomesd_onnx_export"] = tomesd_onnx_attempt()


if __name__ == "__main__":
    main()
