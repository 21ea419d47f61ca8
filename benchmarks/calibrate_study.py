"""Does `tofu-edge calibrate` pick a better ToFu switch than L // 2? Checked on the accuracy study's model.

Usage: python -m benchmarks.calibrate_study [--images 64] [--rs 2,4,6]
Calibrates on Fashion-MNIST *training* images, then reads the test accuracy of the chosen switch, of
L // 2 and of the best switch from benchmarks/results/accuracy_study.json (run accuracy_study.py first).
Writes benchmarks/results/calibrate_study.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.accuracy_study import load_fashion_mnist, load_model, to_input
from benchmarks.common import RESULTS, environment, write_json
from tofu_edge import FusionConfig
from tofu_edge.calibrate import calibrate_switch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="calibration images (from the training split)")
    parser.add_argument("--rs", default="2,4,6")
    parser.add_argument("--study", default=str(RESULTS / "accuracy_study.json"))
    parser.add_argument("--output", default=str(RESULTS / "calibrate_study.json"))
    args = parser.parse_args()

    torch.set_num_threads(2)
    model, _ = load_model()
    images = to_input(load_fashion_mnist("train")[0][: args.images])
    num_blocks = len(model.blocks)
    accuracy = _tofu_accuracy(json.loads(Path(args.study).read_text()), num_blocks)
    rows = []
    for r in map(int, args.rs.split(",")):
        config = FusionConfig(r=r, clamp=True)
        search = calibrate_switch(model, images, config, method="search")
        by_switch = accuracy.get(r, {})
        best = max(by_switch, key=by_switch.get) if by_switch else None
        rows.append(
            {
                "r": r,
                "search_switch": search.switch,
                "probe_switch": search.probe_switch,
                "default_switch": num_blocks // 2,
                "best_switch_on_test": best,
                "top1_search": by_switch.get(search.switch),
                "top1_probe": by_switch.get(search.probe_switch),
                "top1_default": by_switch.get(num_blocks // 2),
                "top1_best": by_switch.get(best),
                "calibration": search.to_dict(),
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "calibration"}), flush=True)
    write_json(Path(args.output), {"environment": environment(), "images": args.images, "results": rows})


def _tofu_accuracy(study: dict, num_blocks: int) -> dict[int, dict[int, float]]:
    """Test top-1 of tofu mode by r and switch from the accuracy study (switch 0 is its mlerp row, L its prune row)."""
    table: dict[int, dict[int, float]] = {}
    for row in study["results"]:
        switch = {"tofu": row["switch"], "mlerp": 0, "prune": num_blocks}.get(row["mode"])
        if switch is not None:
            table.setdefault(int(row["r"]), {})[int(switch)] = float(row["top1"])
    return table


if __name__ == "__main__":
    main()
