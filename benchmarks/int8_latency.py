"""Token fusion x INT8 on onnxruntime (CPU): float and INT8, unfused and fused, timed side by side in one process.

Usage: python -m benchmarks.int8_latency [--batches 1,8] [--rs 8,13,16] [--rounds 40,15] [--compare-rs 0,13]

For every batch size: exports DeiT-S (random weights, one seeded model for every variant) unfused and fused at each
r (``FusionConfig(r=r, clamp=True)``: the library's default mode), float and INT8 with the shipped onnxruntime-cpu
recipe (``export_onnx(int8=Int8Config())``, parity-checked), plus the other candidate recipes at ``--compare-rs``
(quantized from the same float files by the library's own quantizer, and onnxruntime's ``quantize_dynamic`` on every
MatMul/Gemm, the fusion step's included, as a new user would run it). Then times every session round-robin (2
intra-op threads, spinning off), reports median latency and the paired speed-up against the float unfused model
(the median of per-round ratios), and writes benchmarks/results/int8_latency.json with the environment and the CPU's
INT8 instruction-set flags.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, environment, time_onnx_files, timing_parser, write_json
from tofu_edge import FusionConfig, create_model
from tofu_edge.export import Int8Config, Int8Recipe, export_onnx, quantize_onnx
from tofu_edge.measure import paired_speedup
from tofu_edge.stats import LatencyStats

INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
OTHER_RECIPES = ("static-qdq", "static-qoperator", "symmetric-qdq", "dynamic-every-matmul")
SHIPPED = Int8Config()  # the onnxruntime-cpu default recipe


def main() -> None:
    args = _parser().parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    rounds = dict(zip(batches, (int(n) for n in args.rounds.split(",")), strict=True))
    rs = [int(r) for r in args.rs.split(",")]
    compare_rs = [int(r) for r in args.compare_rs.split(",")]

    torch.manual_seed(0)
    model = create_model(args.model).eval()
    results, exports, plans = [], [], {}
    load_before = wait_until_idle(args.max_load, args.max_wait * 3600)
    with tempfile.TemporaryDirectory(prefix="int8_latency_") as tmp:
        folder = Path(tmp)
        for batch in batches:
            files = _export_variants(model, folder, batch, rs, exports, plans)
            files |= _quantize_variants(model, folder, batch, compare_rs, files)
            samples = time_onnx_files(files, batch, rounds[batch], args.threads)
            results += _rows(samples, batch, plans)

    env = {
        **environment(args.threads),
        "model": args.model,
        "weights": "random (timm init, seed 0)",
        "ort_threads": args.threads,
        "ort_allow_spinning": False,
        "cpu_int8_flags": _cpu_flags(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "fusion": {str(r): plan.config.to_dict() for r, plan in plans.items()},
        "fusion_plan": {str(r): [[b.r, b.op.value] for b in plan.blocks] for r, plan in plans.items()},
        "shipped_recipe": SHIPPED.to_dict(),
        "recipes": {
            **{recipe.value: recipe.activations for recipe in Int8Recipe},
            "dynamic-every-matmul": "onnxruntime quantize_dynamic on every MatMul/Gemm with a constant weight "
            "(the fusion step's key projection and the head included), per-channel weights",
        },
    }
    write_json(Path(args.output), {"environment": env, "exports": exports, "results": results})
    _print_table(results)


def _parser() -> argparse.ArgumentParser:
    parser = timing_parser(__doc__)  # re-executes with the steady allocator first
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rs", default="8,13,16")
    parser.add_argument("--rounds", default="40,15", help="timed rounds per batch size, in --batches order")
    parser.add_argument("--compare-rs", default="0,13", help="r values at which every candidate recipe is timed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-load", type=float, default=1.0, help="wait for a 1-minute load average below this")
    parser.add_argument("--max-wait", type=float, default=3.0, help="hours to wait for that before running anyway")
    parser.add_argument("--output", default=str(RESULTS / "int8_latency.json"))
    return parser


def _label(r: int) -> str:
    return "unfused" if r == 0 else f"r={r}"


def _export_variants(
    model: torch.nn.Module, folder: Path, batch: int, rs: list[int], exports: list[dict], plans: dict
) -> dict[str, Path]:
    """Float and shipped-INT8 files, unfused and at every r (parity-checked); their export rows and plans are
    appended to ``exports`` and ``plans``."""
    files = {}
    for r in [0, *rs]:
        config = FusionConfig(r=r, clamp=True)
        for int8 in (None, SHIPPED):
            name = f"{'int8' if int8 else 'float'} {_label(r)}"
            path = folder / f"{name.replace(' ', '_').replace('=', '')}_b{batch}.onnx"
            started = time.perf_counter()
            report = export_onnx(model, path, config, batch=batch, int8=int8)
            seconds = time.perf_counter() - started
            files[name] = path
            plans[r] = report.plan
            exports.append(_export_row(name, batch, seconds, report))
            print(f"exported {name} b={batch} in {seconds:.0f} s", flush=True)
    return files


def _quantize_variants(
    model: torch.nn.Module, folder: Path, batch: int, compare_rs: list[int], files: dict[str, Path]
) -> dict[str, Path]:
    """The other candidate recipes, quantized from the float files at ``compare_rs``."""
    quantized = {}
    for r in compare_rs:
        base = files[f"float {_label(r)}"]
        for recipe in OTHER_RECIPES:
            name = f"{recipe} {_label(r)}"
            quantized[name] = folder / f"{recipe}_r{r}_b{batch}.onnx"
            started = time.perf_counter()
            quantize_file(base, quantized[name], recipe, model)
            print(f"quantized {name} b={batch} in {time.perf_counter() - started:.0f} s", flush=True)
    return quantized


def _rows(samples: dict[str, list[float]], batch: int, plans: dict) -> list[dict]:
    """One result row per variant: latency statistics and the paired speed-up against the float unfused model."""
    rows = []
    for name, times in samples.items():
        r = 0 if "unfused" in name else int(name.rsplit("=", 1)[1])
        row = {
            "variant": name,
            "batch": batch,
            "precision": "fp32" if name.startswith("float") else "int8",
            "recipe": None if name.startswith("float") else name.rsplit(" ", 1)[0].replace("int8", "dynamic"),
            "r": r,
            "gmacs": plans[r].macs / 1e9,
            "speedup_vs_float_unfused": paired_speedup(samples["float unfused"], times),
            **LatencyStats.from_samples(times, batch).to_dict(),
        }
        rows.append(row)
        print(f"b={batch} {name:28s} {row['median_ms']:7.1f} ms  x{row['speedup_vs_float_unfused']:.2f}")
    return rows


def _export_row(name: str, batch: int, seconds: float, report) -> dict:
    row = {"variant": name, "batch": batch, "export_s": seconds, "parity_passed": report.parity.passed}
    row["onnx_mb"] = report.onnx_path.stat().st_size / 1e6
    if report.int8 is not None:
        row["int8_parity"] = report.int8.parity.to_dict()
        row["int8_vs_unfused"] = [asdict(s) for s in report.int8.vs_unfused]
    return row


def quantize_file(
    source: Path,
    output: Path,
    recipe: str,
    model: torch.nn.Module,
    calibration_data: np.ndarray | None = None,
) -> None:
    """Quantize a float file exported from ``model`` with the library's quantizer (`quantize_onnx`: the node
    selection and checks of ``export_onnx(int8=...)``, without its parity report), or with onnxruntime on every
    MatMul (``dynamic-every-matmul``).

    Calibrated recipes use ``calibration_data`` ([N, C, H, W] model inputs), else the bundled photos.
    """
    if recipe == "dynamic-every-matmul":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(source, output, op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                         weight_type=QuantType.QInt8)  # fmt: skip
        return
    recipe = Int8Recipe(recipe)
    config = Int8Config(recipe=recipe, calibration_data=calibration_data if recipe.calibrated else None)
    quantize_onnx(source, output, config, model)  # fusing keeps the Linear weights: the unfused model finds them


def wait_until_idle(max_load: float = 1.0, timeout_s: float = 3600, poll_s: float = 120) -> tuple[float, ...]:
    """Wait (up to ``timeout_s``) for the 1-minute load average to drop below ``max_load``; returns the load seen."""
    deadline = time.monotonic() + timeout_s
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        print(f"load {os.getloadavg()[0]:.2f} >= {max_load}: waiting {poll_s:.0f} s for an idle machine", flush=True)
        time.sleep(poll_s)
    return os.getloadavg()


def _cpu_flags() -> dict:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags = set(
        next(
            (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith(("flags", "Features"))), []
        )
    )
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), None)
    return {"model": model, **{flag: flag in flags for flag in INT8_FLAGS}}


def _print_table(results: list[dict]) -> None:
    print("\n| batch | variant | GMACs | median ms | speed-up vs float unfused |")
    print("|---|---|---|---|---|")
    for row in results:
        print(
            f"| {row['batch']} | {row['variant']} | {row['gmacs']:.2f} | {row['median_ms']:.1f} | "
            f"{row['speedup_vs_float_unfused']:.2f}x |"
        )


if __name__ == "__main__":
    main()
