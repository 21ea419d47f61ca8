"""Selection study: do the energy- and attention-protected selections beat ToMe's bipartite choice on real weights?

Run as ``python -m benchmarks.real_weights_study --selection [--quick] [--selection-parts photos,probe,toy,speed]``
(part of the real-weights study; writes results/real_weights_selection.json, or the part's own file when only
some parts run, and prints markdown tables).

The yardstick: every offline photo of `benchmarks.real_images` as 10 views (`VIEWS`: square crops at three scales
and positions, plain and mirrored), split by *source photo* into the 15 calibration and 16 held-out photos (150 and
160 views). Each view's score is the cosine of DINOv2 ViT-S/14's output (the final-norm CLS feature) to the unfused
model's; a difference between two variants is paired per view, and its standard error is given twice: over views
(as if they were independent) and clustered by source photo (the honest one: views of one photo move together).

Measured, against ToMe (``mean``, bipartite) at the same schedule:

- DINOv2 at 224 px, r = 8 / 13 / 16 and keep = 0.5: ToMe, the current default (``mlerp``, bipartite) and each
  strategy with the step op that did better on the calibration views at r = 16 while its protected share was
  chosen (energy with ``mean``, attention with ``mlerp``), on calibration and held-out views; ToMe with its A/B
  sets swapped (A = odd positions) at r = 13 and 16, to show how much the assignment alone moves the score;
- DINOv2 at 280 px (r scaled by the patch count), held-out views;
- the Fashion-MNIST linear probe (trained on unfused features) at r = 16: top-1 with paired standard errors;
- the toy Fashion-MNIST ViT (`benchmarks.accuracy_study`, trained weights) as a second opinion: top-1 on the test set;
- the speed cost of each selection in onnxruntime (b = 1 and 8, 2 threads, interleaved with the bipartite file).

The rule that makes a selection the default was fixed before the held-out views were looked at (`DEFAULT_RULE`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from tofu_edge import FusionConfig, fuse
from tofu_edge.config import Selection

SIZE, OTHER_SIZE, PATCH = 224, 280, 14
SCHEDULES = {"r=8": dict(r=8), "r=13": dict(r=13), "r=16": dict(r=16), "keep=0.5": dict(keep=0.5)}
TOME, DEFAULT = "mean bipartite", "mlerp bipartite"
VARIANTS = {
    f"{op} {selection.value}": (op, selection)
    for op, selection in (
        ("mean", Selection.BIPARTITE),
        ("mlerp", Selection.BIPARTITE),
        ("mean", Selection.ENERGY),
        ("mlerp", Selection.ATTENTION),
    )
}
CANDIDATES = [name for name in VARIANTS if not name.endswith("bipartite")]
SWAPPED = "mean bipartite, A/B swapped"
PARTS = "photos,probe,toy,speed"  # every part, in the order they run (``--selection-parts``)
PROBE_SCHEDULE, PROBE_TRAIN, PROBE_TEST = "r=16", 1000, 600
TOY_RS = (2, 4, 6)
CHUNK = 50
DEFAULT_RULE = (
    "A candidate (energy or attention, with mean or mlerp) becomes the default only if, on the calibration views at "
    "224 px, its paired cosine gain over the current default (mlerp bipartite) is positive at all four schedules and "
    "at least two photo-clustered standard errors at r=13 and r=16 (the largest mean gain over the four schedules "
    "wins among those that qualify); and then, on the held-out views, its gain over the current default is positive "
    "at r=13 and r=16, and its onnxruntime time at b=1 is at most 3 % above the bipartite file's."
)


def config_for(schedule: dict, variant: str, scale: float = 1.0) -> FusionConfig:
    """The fusion config of a variant at a schedule (``r`` scaled for another input size; clamped as ToMe does)."""
    op, selection = VARIANTS[variant]
    if "r" in schedule:
        return FusionConfig(r=round(schedule["r"] * scale), mode=op, selection=selection, clamp=True)
    return FusionConfig(keep=schedule["keep"], mode=op, selection=selection)


@contextlib.contextmanager
def swapped_sets() -> Iterator[None]:
    """A takes the odd positions and B the even ones (the study's A/B assignment check; the package never does)."""
    from tofu_edge.ops import match

    original = match.split_starts

    def swapped(num_prefix: int) -> tuple[int, int]:
        a_start, b_start = original(num_prefix)
        return b_start, a_start

    match.split_starts = swapped
    try:
        yield
    finally:
        match.split_starts = original


def outputs(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's outputs in chunks of `CHUNK` images.

    Shapes:
        images: [N, 3, H, W]
        returns: [N, D]
    """
    with torch.inference_mode():
        return torch.cat([model(chunk) for chunk in images.split(CHUNK)])


def view_cosines(model, views, reference, config: FusionConfig, swap: bool = False) -> torch.Tensor:
    """Per-view cosine of the fused model's outputs to the unfused ones.

    Shapes:
        views: [V, 3, H, W]; reference: [V, D]; returns: [V]
    """
    fused = fuse(copy.deepcopy(model), config)
    with swapped_sets() if swap else contextlib.nullcontext():
        out = outputs(fused, views)
    return torch.nn.functional.cosine_similarity(out.double(), reference.double(), dim=-1)


def photo_index(names: list[str]) -> torch.Tensor:
    """The source photo of every view as an integer (views are paired and clustered by it).

    Shapes:
        returns: [len(names)] int64
    """
    photos = {name: index for index, name in enumerate(sorted(set(names)))}
    return torch.tensor([photos[name] for name in names])


def paired(cosines: torch.Tensor, baseline: torch.Tensor, photo: torch.Tensor) -> dict:
    """Mean paired difference with its standard error over views and clustered by source photo.

    Shapes:
        cosines, baseline: [V]; photo: [V] int64 (the source photo of each view)
    """
    diff = (cosines - baseline).double()
    per_photo = torch.stack([diff[photo == p].mean() for p in photo.unique()])
    return {
        "diff": float(diff.mean()),
        "se_views": float(diff.std() / math.sqrt(len(diff))),
        "se_photos": float(per_photo.std() / math.sqrt(len(per_photo))),
        "photos_better": int((per_photo > 0).sum()),
        "photos": len(per_photo),
    }


def cosine_rows(cosines: dict[str, torch.Tensor], photo: torch.Tensor) -> dict:
    """Mean cosine of every variant and its paired differences to ToMe and to the current default."""
    rows = {}
    for name, values in cosines.items():
        rows[name] = {"cosine": float(values.mean()), "worst": float(values.min())}
        if name != TOME:
            rows[name]["vs_tome"] = paired(values, cosines[TOME], photo)
        if name not in (TOME, DEFAULT, SWAPPED):
            rows[name]["vs_default"] = paired(values, cosines[DEFAULT], photo)
    return rows


def photo_study(log: Callable[[str], None], quick: bool) -> dict:
    """Cosines on calibration and held-out views at 224 px, then held-out views at 280 px."""
    from benchmarks.dinov2 import load_dinov2
    from benchmarks.real_images import CALIBRATION, photo_views

    model = load_dinov2(SIZE)
    views, names = photo_views(model)
    if quick:
        keep = [i for i, n in enumerate(names) if n in ("foolbox/imagenet_00_243", "skimage/chelsea")]
        views, names = views[keep], [names[i] for i in keep]
    photo = photo_index(names)
    calibration = torch.tensor([n in CALIBRATION for n in names])
    reference = outputs(model, views)
    schedules = {"r=13": SCHEDULES["r=13"]} if quick else SCHEDULES
    result = {"views": len(names), "calibration_views": int(calibration.sum()), "schedules": {}}
    for schedule, values in schedules.items():
        cosines = {name: view_cosines(model, views, reference, config_for(values, name)) for name in VARIANTS}
        if schedule in ("r=13", "r=16"):
            cosines[SWAPPED] = view_cosines(model, views, reference, config_for(values, TOME), swap=True)
        result["schedules"][schedule] = {
            split: cosine_rows({n: c[mask] for n, c in cosines.items()}, photo[mask])
            for split, mask in (("calibration", calibration), ("held_out", ~calibration))
        }
        log(f"views at {SIZE} px, {schedule}: {len(cosines)} variants")
    result["other_size"] = {} if quick else other_size_study(log)
    return result


def other_size_study(log: Callable[[str], None]) -> dict:
    """Held-out views at `OTHER_SIZE` px, ``r`` scaled by the patch count (r=13 and r=16 only)."""
    from benchmarks.dinov2 import load_dinov2
    from benchmarks.real_images import photo_views

    model = load_dinov2(OTHER_SIZE)
    views, names = photo_views(model, "held_out")
    photo = photo_index(names)
    reference = outputs(model, views)
    scale = (OTHER_SIZE // PATCH) ** 2 / (SIZE // PATCH) ** 2
    rows = {}
    for schedule in ("r=13", "r=16"):
        values = SCHEDULES[schedule]
        cosines = {name: view_cosines(model, views, reference, config_for(values, name, scale)) for name in VARIANTS}
        rows[schedule] = {"r": round(values["r"] * scale), "held_out": cosine_rows(cosines, photo)}
        log(f"held-out views at {OTHER_SIZE} px, {schedule}")
    return rows


def apply_rule(photos: dict, calibration_only: bool) -> dict:
    """`DEFAULT_RULE` on the calibration views (and, unless ``calibration_only``, its held-out confirmation)."""
    schedules = photos["schedules"]
    qualified = {}
    for name in CANDIDATES:
        gains = {s: schedules[s]["calibration"][name]["vs_default"] for s in schedules}
        positive = all(g["diff"] > 0 for g in gains.values())
        resolved = all(gains[s]["diff"] >= 2 * gains[s]["se_photos"] for s in ("r=13", "r=16") if s in gains)
        if positive and resolved:
            qualified[name] = sum(g["diff"] for g in gains.values()) / len(gains)
    chosen = max(qualified, key=qualified.get) if qualified else None
    outcome = {"qualified_on_calibration": qualified, "chosen_on_calibration": chosen}
    if chosen is not None and not calibration_only:
        held = {s: schedules[s]["held_out"][chosen]["vs_default"]["diff"] for s in ("r=13", "r=16") if s in schedules}
        outcome["held_out_gain"] = held
        outcome["confirmed_on_held_out"] = all(value > 0 for value in held.values())
    return outcome


def probe_study(variants: list[str], train: int, test: int, log: Callable[[str], None]) -> dict:
    """The Fashion-MNIST linear probe on DINOv2 at `PROBE_SCHEDULE`: top-1 of each variant, paired to ToMe."""
    from benchmarks.accuracy_study import paired as paired_top1
    from benchmarks.dinov2 import load_dinov2
    from benchmarks.fashion_mnist import features, sample, to_model_input
    from benchmarks.real_weights_rules import fit_probe

    model = load_dinov2(SIZE)
    train_images, train_labels = sample("train", train, 0)
    test_images, test_labels = sample("t10k", test, 0)
    classify = fit_probe(features(model, train_images), train_labels, seed=0)
    inputs = torch.cat([to_model_input(chunk, model) for chunk in test_images.split(CHUNK)])
    correct = {"unfused": classify(outputs(model, inputs)) == test_labels}
    for name in variants:
        fused = fuse(copy.deepcopy(model), config_for(SCHEDULES[PROBE_SCHEDULE], name))
        correct[name] = classify(outputs(fused, inputs)) == test_labels
        log(f"probe: {name}")
    rows = {name: {"top1": float(c.double().mean())} for name, c in correct.items()}
    for name in variants:
        if name != TOME:
            rows[name]["vs_tome"] = paired_top1(correct[name], correct[TOME])
    return {"schedule": PROBE_SCHEDULE, "train": train, "test": test, "rows": rows}


def toy_study(log: Callable[[str], None], limit: int | None) -> dict:
    """The trained toy Fashion-MNIST ViT: top-1 of every variant at `TOY_RS`, paired to ToMe."""
    from benchmarks.accuracy_study import load_fashion_mnist, load_model, predict
    from benchmarks.accuracy_study import paired as paired_top1

    model, _ = load_model()
    images, labels = load_fashion_mnist("t10k")
    images, labels = images[:limit], labels[:limit]
    result = {"test": len(labels), "unfused_top1": float((predict(model, images) == labels).double().mean())}
    for r in TOY_RS:
        correct = {
            name: predict(fuse(copy.deepcopy(model), config_for({"r": r}, name)), images) == labels for name in VARIANTS
        }
        result[f"r={r}"] = {
            name: {"top1": float(c.double().mean())}
            | ({} if name == TOME else {"vs_tome": paired_top1(c, correct[TOME])})
            for name, c in correct.items()
        }
        log(f"toy model, r={r}")
    return result


def speed_study(folder: Path, batches: tuple[int, ...], seconds: float, log: Callable[[str], None]) -> dict:
    """onnxruntime time of each selection's file over the bipartite one (MLERP, r=13, 224 px, 2 threads),
    interleaved in one process: the median over rounds of variant / bipartite."""
    import numpy as np

    from benchmarks.dinov2 import load_dinov2
    from tofu_edge.export import export_onnx
    from tofu_edge.export.session import ort_session
    from tofu_edge.measure.latency import measure_interleaved, ort_runner

    model = load_dinov2(SIZE)
    rows = {}
    for batch in batches:
        runners = []
        for selection in Selection:
            path = folder / f"dinov2_r13_{selection.value}_b{batch}.onnx"
            config = FusionConfig(r=13, mode="mlerp", selection=selection)
            export_onnx(model, path, config, batch=batch)
            images = np.random.default_rng(0).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
            runners.append(ort_runner(selection.value, ort_session(path, threads=2), images))
        samples = measure_interleaved(runners, warmup=5, iterations=None, seconds=seconds)
        base = samples[Selection.BIPARTITE.value]
        rows[f"b={batch}"] = {
            name: {
                "median_ms": float(np.median(values)),
                "time_ratio": float(np.median(np.asarray(values) / np.asarray(base))),
                "rounds": len(values),
            }
            for name, values in samples.items()
        }
        log(f"speed b={batch}: " + ", ".join(f"{n} {v['time_ratio']:.3f}" for n, v in rows[f"b={batch}"].items()))
    return rows


def run_selection_study(args, log: Callable[[str], None]) -> dict:
    """Every part above, in order; the default rule applied on the calibration views before the held-out ones are
    read for it."""
    import os
    import tempfile

    from tofu_edge.measure.environment import describe_environment

    began = time.perf_counter()
    loads = {"start": list(os.getloadavg())}
    parts = set(args.selection_parts.split(","))
    photos = rule = probe = toy = speed = None
    if "photos" in parts:
        photos = photo_study(log, args.quick)
        rule = apply_rule(photos, calibration_only=True)
        log(f"rule on the calibration views: {rule}")
        rule = apply_rule(photos, calibration_only=False)
    if "probe" in parts:
        train, test = (100, 40) if args.quick else (PROBE_TRAIN, PROBE_TEST)
        probe = probe_study(list(VARIANTS), train, test, log)
    if "toy" in parts:
        toy = toy_study(log, 500 if args.quick else None)
    if "speed" in parts:
        with tempfile.TemporaryDirectory() as folder:
            speed = speed_study(Path(folder), (1,) if args.quick else (1, 8), 5 if args.quick else 90, log)
    loads["end"] = list(os.getloadavg())
    return {
        "study": "real_weights_selection",
        "command": "python -m benchmarks.real_weights_study --selection" + (" --quick" if args.quick else ""),
        "environment": describe_environment(threads=torch.get_num_threads()),
        "load_average": loads,
        "default_rule": DEFAULT_RULE,
        "rule": rule,
        "photos": photos,
        "probe": probe,
        "toy": toy,
        "speed": speed,
        "seconds": time.perf_counter() - began,
    }


def render(payload: dict) -> str:
    """Markdown tables: cosine differences to ToMe per schedule and split, the probe, the toy model, the speed."""

    def delta(stat: dict | None, scale: float = 1.0, digits: int = 4) -> str:
        if stat is None:
            return "-"
        se = stat["se_photos"] if "se_photos" in stat else stat["se"]
        return f"{stat['diff'] * scale:+.{digits}f} ± {se * scale:.{digits}f}"

    lines: list[str] = []
    if payload["photos"] is not None:
        lines += [
            "| schedule | variant | calibration cosine | vs ToMe (± photo SE) | held-out cosine | vs ToMe (± SE) |",
            "|---|---|---|---|---|---|",
        ]
        for schedule, splits in payload["photos"]["schedules"].items():
            for name, row in splits["calibration"].items():
                held = splits["held_out"][name]
                lines.append(
                    f"| {schedule} | {name} | {row['cosine']:.5f} | {delta(row.get('vs_tome'))} | {held['cosine']:.5f} "
                    f"| {delta(held.get('vs_tome'))} |"
                )
        for schedule, block in payload["photos"].get("other_size", {}).items():
            for name, row in block["held_out"].items():
                lines.append(
                    f"| {OTHER_SIZE} px {schedule} (r={block['r']}) | {name} | - | - | {row['cosine']:.5f} | "
                    f"{delta(row.get('vs_tome'))} |"
                )
        lines += ["", f"Rule: {payload['rule']}"]
    if payload["probe"] is not None:
        probe = payload["probe"]
        lines += ["", f"Probe top-1 at {probe['schedule']} ({probe['test']} images):", ""]
        for name, row in probe["rows"].items():
            lines.append(f"- {name}: {row['top1'] * 100:.1f} % ({delta(row.get('vs_tome'), 100, 1)} points vs ToMe)")
    if payload["toy"] is not None:
        toy = payload["toy"]
        lines += ["", f"Toy model top-1 (unfused {toy['unfused_top1'] * 100:.2f} %):", ""]
        for key, rows in toy.items():
            if key.startswith("r="):
                cells = [f"{n} {r['top1'] * 100:.2f} ({delta(r.get('vs_tome'), 100, 2)})" for n, r in rows.items()]
                lines.append(f"- {key}: " + "; ".join(cells))
    if payload["speed"] is not None:
        lines += ["", "onnxruntime time over the bipartite file (MLERP, r=13):", ""]
        for batch, rows in payload["speed"].items():
            lines.append(f"- {batch}: " + ", ".join(f"{n} {r['time_ratio']:.3f}" for n, r in rows.items()))
    return "\n".join(lines)
