"""Eager PyTorch latency of fused DeiT-S (tofu and mean modes) against unfused timm, in one process.

Usage: python benchmarks/eager_latency.py [--rounds 12] [--model deit_small_patch16_224]
Writes benchmarks/results/eager_latency.json and prints a markdown table of speed-ups.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

import tofu_edge
from benchmarks.common import RESULTS, environment, write_json
from tofu_edge import FusionConfig
from tofu_edge.measure import measure_interleaved, paired_speedup, torch_runner
from tofu_edge.stats import LatencyStats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rs", default="8,13,16")
    parser.add_argument("--modes", default="tofu,mean")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS / "eager_latency.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    base = tofu_edge.create_model(args.model)
    variants = {"unfused": (base, None)}
    for mode in args.modes.split(","):
        for r in map(int, args.rs.split(",")):
            # clamp: r=16 cannot be removed in DeiT-S's last block (21 tokens); cap it there as ToMe does
            model = tofu_edge.fuse(copy.deepcopy(base), FusionConfig(r=r, mode=mode, clamp=True))
            variants[f"{mode} r={r}"] = (model, model.tofu_plan)
    unfused_gmacs = tofu_edge.resolve_plan(FusionConfig(), tofu_edge.describe_vit(base)).macs / 1e9

    results = []
    for batch in map(int, args.batches.split(",")):
        images = torch.randn(batch, 3, *base.patch_embed.img_size)
        runners = [torch_runner(name, model, images) for name, (model, _) in variants.items()]
        rounds = args.rounds * (8 if batch == 1 else 1)  # many more short calls at batch 1
        samples = measure_interleaved(runners, warmup=2, iterations=rounds)
        for name, (_, plan) in variants.items():
            stats = LatencyStats.from_samples(samples[name], batch).to_dict()
            gmacs = plan.macs / 1e9 if plan else unfused_gmacs
            results.append(
                {
                    "variant": name,
                    "batch": batch,
                    "gmacs": gmacs,
                    "plan": plan.to_dict() if plan else None,
                    "speedup": paired_speedup(samples["unfused"], samples[name]),
                    "ideal_speedup": unfused_gmacs / gmacs,
                    **stats,
                }
            )
            print(f"b={batch} {name:12s} {stats['median_ms']:8.1f} ms  x{results[-1]['speedup']:.2f}", flush=True)

    env = {
        **environment(args.threads),
        "model": args.model,
        "weights": "random (timm init, seed 0)",
        "precision": "fp32",
    }
    write_json(Path(args.output), {"environment": env, "results": results})
    print("\n| variant | GMACs | ideal | b=1 speed-up | b=8 speed-up |\n|---|---|---|---|---|")
    for name in variants:
        rows = {r["batch"]: r for r in results if r["variant"] == name}
        speedups = " | ".join(f"{rows[b]['speedup']:.2f}x" if b in rows else "-" for b in (1, 8))
        first = next(iter(rows.values()))
        print(f"| {name} | {first['gmacs']:.2f} | {first['ideal_speedup']:.2f}x | {speedups} |")


if __name__ == "__main__":
    main()
