"""PyTorch latency of fused DeiT-S against unfused timm, eager and ``torch.compile``d, in one process per group.

Usage: python -m benchmarks.eager_latency [--rs 8,13,16] [--modes default,mean] [--batches 1,8] [--compile]

Each group (one batch size, eager or compiled) is one `tofu_edge.measure.bench_model` run: the unfused model and
every fused variant timed round-robin, one call each per round, after a warm-up (which absorbs torch.compile's
compilation), speed-ups as the median of per-round ratios: exactly what `tofu-edge bench --backend torch
[--compile]` does. Writes benchmarks/results/eager_latency.json.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import RESULTS, timing_parser, write_json
from tofu_edge import FusionConfig
from tofu_edge.measure import Timing, Variant, bench_model, variant_name


def main() -> None:
    parser = timing_parser(__doc__)  # re-executes with the steady allocator first
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rs", default="8,13,16")
    parser.add_argument("--modes", default="default,mean", help="default (the library's) or mode names; comma list")
    parser.add_argument("--rounds", default="60,24", help="Timed rounds per batch size (comma list, in order).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="Also time every variant after torch.compile.")
    parser.add_argument("--compile-rs", default="13", help="r values timed compiled (compiling is slow).")
    parser.add_argument("--output", default=str(RESULTS / "eager_latency.json"))
    args = parser.parse_args()

    batches = [int(b) for b in args.batches.split(",")]
    rounds = dict(zip(batches, [int(n) for n in args.rounds.split(",")] * len(batches), strict=False))
    groups = [(False, args.rs)] + ([(True, args.compile_rs)] if args.compile else [])
    headers, rows = [], []
    for compiled in (c for c, _ in groups):
        rs = dict(groups)[compiled]
        for batch in batches:
            timing = Timing(warmup=6 if compiled else 3, iterations=rounds[batch], threads=args.threads)
            result = bench_model(
                args.model, variants(rs, args.modes), batch=batch, compile=compiled, timing=timing, progress=None
            )
            headers.append(result.header)
            for row in result.rows:
                rows.append({**row, "compiled": compiled})
                print(
                    f"{'compiled' if compiled else 'eager':8s} b={batch} {row['variant']:28s} "
                    f"{row['stats']['median_ms']:8.2f} ms  x{row['speedup']:.3f} (ideal x{row['ideal_speedup']:.2f})",
                    flush=True,
                )
    write_json(Path(args.output), {"environment": headers[0], "groups": headers, "results": rows})
    print(f"wrote {args.output}")


def variants(rs: str, modes: str) -> list[Variant]:
    """The unfused model, every mode at every r (``clamp=True``: r=16 is capped in DeiT-S's last block), and a
    control: a second copy of the unfused model (fused with r=0, which runs timm's own blocks), whose speed-up shows
    how far two equal models measure apart."""
    found = [Variant(variant_name(None))]
    for r in map(int, rs.split(",")):
        for mode in modes.split(","):
            config = FusionConfig(r=r, clamp=True) if mode == "default" else FusionConfig(r=r, mode=mode, clamp=True)
            name = variant_name(config)
            found.append(Variant(f"default ({name})" if mode == "default" else name, config))
    return [*found, Variant("unfused (second copy)", FusionConfig())]


if __name__ == "__main__":
    main()
