"""onnxruntime (CPU) latency of exported fused DeiT-S against the exported unfused model, timed side by side.

Usage: python -m benchmarks.onnx_latency [--rs 8,13,16] [--batches 1,8] [--modes default,mean] [--align 8]
                                         [--plugin-modes default] [--no-stock]

For every batch size, exports the unfused model, the `static-drop` ceiling at each r (the fused token counts with
tokens simply cut off: no matching, no merge, so the fastest this runtime can be at those shapes), each fusion
mode at each r (portable flavour, static batch, opset 17, the exporter's own parity check), the plugin flavour of
each ``--plugin-modes`` mode (its steps run by the native ops library, ``libtofu_edge_ort.so``, which must be
built), the same unfused and static-drop models exported by ``torch.onnx.export(dynamo=False)`` (`stock`: the
export a user would write by hand, to compare our exporter's graphs with), and optionally the ceiling and the
first mode again with ``align`` (token counts in multiples of N at the same MACs); then runs all sessions
round-robin, one call each per round, with a second session of the unfused file as a control, in three fresh
processes that open the sessions in rotated orders (``--repeats``). Reports the median of the per-round
speed-ups against the unfused call of the same round (drifts in machine speed cancel), averaged over the three
processes, each variant's fraction of its FLOPs-ideal speed-up and of the ceiling's speed-up, and, where TensorRT-RTX is
installed, the TensorRT layers each portable fusion step adds. Writes benchmarks/results/onnx_latency.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import re
import statistics
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from unittest import mock

import onnx
import torch

from benchmarks.common import RESULTS, environment, time_onnx_files, timing_parser, write_json
from tofu_edge import FusionConfig, create_model, fuse
from tofu_edge.engine import tensorrt_rtx_available
from tofu_edge.export import export_onnx
from tofu_edge.export.ort_ops import find_ort_ops
from tofu_edge.measure import paired_speedup
from tofu_edge.measure.tensorrt_layers import step_layers
from tofu_edge.measure.variants import variant_name
from tofu_edge.patch import FusedBlock
from tofu_edge.plan import FusionPlan
from tofu_edge.stats import LatencyStats

STATIC_DROP = "static-drop"
STOCK = "stock "  # prefix of the variants exported by torch.onnx.export(dynamo=False)
PLUGIN = " plugin"  # suffix of the plugin-flavour variants
CONTROL = "unfused (second session)"  # the same file again: its speed-up shows how far two equal sessions differ


@dataclasses.dataclass(frozen=True)
class Exported:
    """One exported variant: its file, plan, flavour and node count."""

    path: Path
    plan: FusionPlan
    flavor: str
    nodes: int


def main() -> None:
    parser = timing_parser(__doc__)  # re-executes with the steady allocator first
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rs", default="8,13,16")
    parser.add_argument(
        "--modes", default="default,mean", help="default (the library's), a mode name, or tofu@SWITCH; comma list"
    )
    parser.add_argument("--align", type=int, help="Also time the ceiling and the first mode with this align (e.g. 8).")
    parser.add_argument(
        "--plugin-modes",
        default="default",
        help="Modes also exported in the plugin flavour, run by the native ops library (comma list; empty: none).",
    )
    parser.add_argument("--no-stock", action="store_true", help="Skip the torch.onnx.export(dynamo=False) variants.")
    parser.add_argument("--rounds", default="40,24", help="Timed rounds per batch size (comma list, in order).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--spinning",
        action="store_true",
        help="Let onnxruntime's idle threads spin (its default). Off by default: sessions interleaved in one "
        "process slow each other down when they spin (benchmarks/README.md, ort_spinning.py).",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="Fresh timing processes per batch size, each opening the sessions in another order; speed-ups are "
        "averaged over them (a session keeps the speed its memory placement gave it: one process is not enough).",
    )
    parser.add_argument("--output", default=str(RESULTS / "onnx_latency.json"))
    args = parser.parse_args()

    batches = [int(b) for b in args.batches.split(",")]
    rounds = dict(zip(batches, [int(n) for n in args.rounds.split(",")] * len(batches), strict=False))
    plugin_modes = [m for m in args.plugin_modes.split(",") if m]
    library = find_ort_ops() if plugin_modes else None
    if plugin_modes and library is None:
        parser.error(
            "--plugin-modes needs the native ops library; build it (kernels/README.md) or pass --plugin-modes ''"
        )
    results, exports = [], []
    with tempfile.TemporaryDirectory() as folder:
        for batch in batches:
            configs = variants(args.rs, args.modes, args.align, plugin_modes, stock=not args.no_stock)
            exported = {}
            for name, config in configs.items():
                started = time.perf_counter()
                exported[name] = export_any(args.model, Path(folder), name, config, batch)
                seconds = time.perf_counter() - started
                exports.append({"variant": name, "batch": batch, "export_and_parity_s": seconds})
                print(f"exported {name} b={batch} in {seconds:.1f} s ({exported[name].nodes} nodes)")
            layers = tensorrt_layers(exported)
            files = {name: str(e.path) for name, e in exported.items()}
            files[CONTROL] = files["unfused"]
            repeats = time_repeats(files, batch, rounds[batch], args.threads, args.spinning, args.repeats)
            for name, e in [*exported.items(), (CONTROL, exported["unfused"])]:
                results.append(_row(name, batch, e, repeats, layers.get(name)))
            _print_batch([row for row in results if row["batch"] == batch])

    env = {
        **environment(args.threads),
        "model": args.model,
        "ort_allow_spinning": args.spinning,
        "weights": "random (timm init)",
        "precision": "fp32",
        "opset": 17,
        "rounds": rounds,
        "repeats": args.repeats,
        "ort_ops_library": None if library is None else {"path": str(library.path), "api_version": library.api_version},
    }
    write_json(Path(args.output), {"environment": env, "exports": exports, "results": results})
    print(f"wrote {args.output}")


def time_repeats(
    files: dict[str, str], batch: int, rounds: int, threads: int, spinning: bool, repeats: int
) -> list[dict[str, list[float]]]:
    """`time_onnx_files` in ``repeats`` fresh processes, the k-th opening the sessions rotated by k places.

    A fresh process times the sessions: after the exports, the first session opened in this one ran ~10 % slower
    than a second session of the same file; and within a process each session keeps the speed its memory placement
    gave it, so two files that onnxruntime optimizes to the same graph can measure several percent apart in one
    process (benchmarks/README.md, "Allocator").
    """
    names = list(files)
    found = []
    for k in range(repeats):
        order = names[k % len(names) :] + names[: k % len(names)]
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            timing = pool.submit(time_onnx_files, {n: files[n] for n in order}, batch, rounds, threads, spinning)
            found.append(timing.result())
    return found


def export_variant(model: str, folder: Path, name: str, config: FusionConfig, batch: int, flavor: str = "portable"):
    """Export one variant into ``folder`` (a file name made from ``name``); a ``static-drop`` name exports the
    ceiling (`_static_drop`). Returns the `export_onnx` report."""
    path = folder / f"{''.join(c if c.isalnum() else '_' for c in name)}_b{batch}.onnx"
    with _static_drop() if name.startswith(STATIC_DROP) else contextlib.nullcontext():
        return export_onnx(model, path, config, batch=batch, flavor=flavor)


def variants(
    rs: str, modes: str, align: int | None, plugin_modes: list[str] = (), stock: bool = False
) -> dict[str, FusionConfig | None]:
    """Unfused, then per r the static-drop ceiling and every mode; with ``align``, the ceiling and the first mode
    (the default) aligned too; the plugin flavour of ``plugin_modes``; with ``stock``, the unfused model and each
    ceiling exported by ``torch.onnx.export(dynamo=False)``.

    ``clamp=True`` everywhere: DeiT-S's last block cannot remove 16 of its 21 tokens; it is capped there as ToMe does.
    """
    found: dict[str, FusionConfig | None] = {"unfused": FusionConfig()}
    if stock:
        found[f"{STOCK}unfused"] = FusionConfig()
    for r in map(int, rs.split(",")):
        configs = {f"{STATIC_DROP} r={r}": FusionConfig(r=r, clamp=True)}
        for mode in modes.split(","):
            configs[_mode_name(mode, r)] = _config(mode, r)
        for position, (name, config) in enumerate(configs.items()):
            found[name] = config
            if align and position < 2:
                found[f"{name} align={align}"] = dataclasses.replace(config, align=align)
        for mode in plugin_modes:
            found[_mode_name(mode, r) + PLUGIN] = _config(mode, r)
        if stock:
            found[f"{STOCK}{STATIC_DROP} r={r}"] = configs[f"{STATIC_DROP} r={r}"]
    return found


def _mode_name(mode: str, r: int) -> str:
    config = _config(mode, r)
    return variant_name(config) if mode != "default" else f"default ({variant_name(config)})"


def export_any(model: str, folder: Path, name: str, config: FusionConfig, batch: int) -> Exported:
    """Export one variant of `variants` by its name: stock, plugin flavour, or ours (`export_variant`)."""
    if name.startswith(STOCK):
        return export_stock(model, folder, name, config, batch)
    report = export_variant(
        model, folder, name, config, batch, flavor="plugin" if name.endswith(PLUGIN) else "portable"
    )
    return Exported(report.onnx_path, report.plan, report.flavor.value, sum(report.ops.values()))


def export_stock(model: str, folder: Path, name: str, config: FusionConfig, batch: int) -> Exported:
    """The model as a user would export it by hand: ``torch.onnx.export(..., opset_version=17, dynamo=False)`` of
    the timm model, fused first for a static-drop name (the ceiling's token counts, no step)."""
    path = folder / f"{''.join(c if c.isalnum() else '_' for c in name)}_b{batch}.onnx"
    module = fuse(create_model(model), config)
    example = torch.randn(batch, 3, *module.patch_embed.img_size)
    with _static_drop() if STATIC_DROP in name else contextlib.nullcontext(), torch.no_grad():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's tracer warnings
            torch.onnx.export(module, (example,), str(path), opset_version=17, dynamo=False, input_names=["images"])
    return Exported(path, module.tofu_plan, "portable", len(onnx.load(str(path)).graph.node))


def tensorrt_layers(exported: dict[str, Exported]) -> dict[str, dict]:
    """TensorRT-RTX's layers per fusion step of every portable variant of ours (`step_layers` against the unfused
    file); empty where TensorRT-RTX is not installed."""
    if not tensorrt_rtx_available():
        return {}
    found = {}
    for name, e in exported.items():
        if e.flavor == "portable" and not name.startswith((STOCK, STATIC_DROP)) and e.plan.macs < e.plan.unfused_macs:
            found[name] = step_layers(e.path, exported["unfused"].path).to_dict()
    return found


def _config(mode: str, r: int) -> FusionConfig:
    if mode == "default":
        return FusionConfig(r=r, clamp=True)
    if mode.startswith("tofu@"):
        return FusionConfig(r=r, mode="tofu", switch=int(mode.removeprefix("tofu@")), clamp=True)
    return FusionConfig(r=r, mode=mode, clamp=True)


def _row(name: str, batch: int, exported: Exported, repeats: list[dict[str, list[float]]], layers: dict | None) -> dict:
    """One variant's figures; speed-ups are the mean over the repeats of each repeat's median per-round ratio."""
    plan = exported.plan
    ideal = plan.unfused_macs / plan.macs
    per_repeat = [paired_speedup(samples["unfused"], samples[name]) for samples in repeats]
    speedup = statistics.fmean(per_repeat)
    found = re.search(r"r=(\d+)", name)
    r = found.group(1) if found else None
    ceiling_name = f"{STATIC_DROP} r={r}" + (f" align={name.split('align=')[1]}" if "align=" in name else "")
    ceiling = None
    if ceiling_name in repeats[0]:
        ceiling = statistics.fmean(paired_speedup(s["unfused"], s[ceiling_name]) for s in repeats)
    samples = [ms for repeat in repeats for ms in repeat[name]]
    return {
        "variant": name,
        "batch": batch,
        "flavor": exported.flavor,
        "exporter": "torch.onnx.export(dynamo=False)" if name.startswith(STOCK) else "tofu_edge.export_onnx",
        "gmacs": plan.macs / 1e9,
        "ideal_speedup": ideal,
        "speedup": speedup,
        "speedup_per_repeat": per_repeat,
        "fraction_of_ideal": speedup / ideal,
        "fraction_of_ceiling": speedup / ceiling if ceiling else None,
        "tokens_out": [b.tokens_out for b in plan.blocks],
        "onnx_nodes": exported.nodes,
        "tensorrt_rtx_layers": layers,
        "plan": plan.to_dict(),
        **LatencyStats.from_samples(samples, batch).to_dict(),
    }


def _print_batch(rows: list[dict]) -> None:
    print("\n| batch | variant | GMACs | ideal | speed-up | of ideal | of ceiling | nodes | TensorRT layers/step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        ceiling = "-" if row["fraction_of_ceiling"] is None else f"{row['fraction_of_ceiling']:.2f}"
        layers = "-" if row["tensorrt_rtx_layers"] is None else f"{row['tensorrt_rtx_layers']['per_step']:.0f}"
        print(
            f"| {row['batch']} | {row['variant']} | {row['gmacs']:.2f} | {row['ideal_speedup']:.2f}x | "
            f"{row['speedup']:.2f}x | **{row['fraction_of_ideal']:.2f}** | {ceiling} | {row['onnx_nodes']} | "
            f"{layers} |",
            flush=True,
        )


@contextlib.contextmanager
def _static_drop():
    """Diagnostic only: blocks keep their first N - r tokens, no matching, so the model has the fused token
    counts and none of the fusion step's ops. Its speed-up is the ceiling this runtime allows."""

    def keep_first(block, x, size, metric):
        return x[:, : x.shape[1] - block.tofu_step.r], size, None

    with mock.patch.object(FusedBlock, "fusion_step", keep_first):
        yield


if __name__ == "__main__":
    main()
