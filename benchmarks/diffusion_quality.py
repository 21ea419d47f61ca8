"""Quality of token fusion in a real (small) generator: Fréchet distances of fused samples to unfused ones.

Usage:
    python -m benchmarks.diffusion_quality train [--device cuda] [--minutes 30]   # writes the checkpoint
    python -m benchmarks.diffusion_quality sample [--device cuda] [--num 200]     # writes the samples (.npz)
    python -m benchmarks.diffusion_quality evaluate                               # FD table, grids, JSON

The generator is `benchmarks.diffusion_generator` (Fashion-MNIST, class-conditional, SD-shaped UNet). Every variant
samples from the same initial noise, class labels and DDIM steps: unfused; ours with prune / mean / MLERP at ratio
0.3 and 0.5 (full-resolution level, self-attention, as tomesd's defaults); ours with tomesd's fixed-corner
destinations; tomesd's own patch (random destinations per call) at 0.3 and 0.5; and the unfused model on other
noise, whose distance to the unfused samples is the floor that sampling noise alone gives. Features: the toy
Fashion-MNIST ViT whose weights are committed (benchmarks/accuracy_study.py), pre-logits (64-d).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.accuracy_study import DATA, MEAN, STD, load_fashion_mnist, load_model, to_input
from benchmarks.common import RESULTS, environment, write_json
from benchmarks.diffusion_generator import CHECKPOINT, load_generator, sample, save_generator, train

SAMPLES = RESULTS / "diffusion_quality_samples.npz"
NOISE_SEED, FLOOR_SEED = 1, 2
RATIOS = (0.3, 0.5)
OPS = ("prune", "mean", "mlerp")
INTERPRETATION = (
    "This measures how far token fusion moves the samples of one small class-conditional diffusion UNet ({params:.1f}M "
    "parameters, Fashion-MNIST, 16x16x4 latents, 256 tokens at the fused level, {steps} DDIM steps with guidance "
    "{guidance}), trained for {minutes:.0f} CPU-minutes, from its own unfused samples with identical noise, and ranks "
    "the merge rules against each other and against tomesd's own patch on that model. It does not measure Stable "
    "Diffusion: SD's 4096 tokens at 64x64 latents are far more redundant than 256 tokens of a 32x32 image, its "
    "features and text conditioning differ, this generator is undertrained (its samples are rough), and FD here uses a "
    "64-d toy classifier's features on {num} samples per variant, not Inception features on 5000+ images. Read "
    "differences smaller than the noise floor (the unfused model on other noise) as no difference. The ordering of "
    "the rules is the transferable part, and even that only as a hypothesis to check on SD itself."
)


def variants() -> list[tuple[str, dict]]:
    """``(name, spec)`` of every sample set; spec keys: ``kind`` (unfused, ours, tomesd), ``config``, ``seed``."""
    out = [
        ("unfused", {"kind": "unfused", "seed": NOISE_SEED}),
        ("unfused, other noise", {"kind": "unfused", "seed": FLOOR_SEED}),
    ]
    for ratio in RATIOS:
        for op in OPS:
            out.append((f"{op} {ratio}", {"kind": "ours", "config": {"ratio": ratio, "op": op}, "seed": NOISE_SEED}))
        out.append((f"tomesd {ratio}", {"kind": "tomesd", "ratio": ratio, "seed": NOISE_SEED}))
    corner = {"ratio": 0.5, "op": "mean", "destinations": "corner"}
    out.append(("mean 0.5 corner", {"kind": "ours", "config": corner, "seed": NOISE_SEED}))
    return out


def sample_all(model, num: int, steps: int, guidance: float, device: str, chunk: int, path: Path) -> dict:
    """Images of every variant as uint8, plus the labels (``i % 10``), saved to ``path`` after each variant."""
    import tomesd

    import tofu_edge.diffusion as td

    model = model.to(device)
    labels = torch.arange(num) % 10
    images = {}
    for name, spec in variants():
        noise = torch.randn(num, 4, 16, 16, generator=torch.Generator().manual_seed(spec["seed"]))
        if spec["kind"] == "ours":
            td.apply(model.unet, td.DiffusionFusionConfig(**spec["config"]))
        elif spec["kind"] == "tomesd":
            torch.manual_seed(0)  # tomesd forks the global generator for its random destinations
            tomesd.apply_patch(model.unet, ratio=spec["ratio"])
        out = [
            sample(model, labels[i : i + chunk].to(device), noise[i : i + chunk].to(device), steps, guidance).cpu()
            for i in range(0, num, chunk)
        ]
        td.remove(model.unet)
        tomesd.remove_patch(model.unet)
        images[name] = (torch.cat(out) * 255).round().to(torch.uint8).numpy()
        data = {"labels": labels.numpy(), "images": images, "steps": steps, "guidance": guidance}
        save_samples(data, path)
        print(f"sampled {name}", flush=True)
    return data


def features(classifier, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pre-logits features and predicted classes of the toy ViT for [0, 255] 32x32 images.

    Shapes:
        images: [N, 32, 32] uint8
        returns: [N, 64] float64, [N] int64
    """
    feats, preds = [], []
    with torch.inference_mode():
        for i in range(0, len(images), 500):
            x = (torch.from_numpy(images[i : i + 500]).float()[:, None] / 255.0 - MEAN) / STD
            pre = classifier.forward_head(classifier.forward_features(x), pre_logits=True)
            feats.append(pre.double().numpy())
            preds.append(classifier.head(pre).argmax(-1).numpy())
    return np.concatenate(feats), np.concatenate(preds)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets.

    Shapes:
        a: [N, D]
        b: [M, D]
    """
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr sqrt(A B) = tr sqrt(A^1/2 B A^1/2), a symmetric PSD matrix: eigenvalues, no general matrix square root
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross)


def evaluate(data: dict) -> dict:
    """FD to the unfused samples and to the real test set, class accuracy, paired pixel error, per variant."""
    classifier, _ = load_model()
    test_images, _ = load_fashion_mnist("t10k", Path(data.get("data_root", DATA)))
    real = to_input(test_images)
    with torch.inference_mode():
        real_feats = classifier.forward_head(classifier.forward_features(real), pre_logits=True).double().numpy()
    labels = data["labels"]
    base_feats, _ = features(classifier, data["images"]["unfused"])
    base = data["images"]["unfused"].astype(np.float64) / 255.0
    rows = []
    for name, images in data["images"].items():
        feats, preds = features(classifier, images)
        diff = images.astype(np.float64) / 255.0 - base
        rows.append(
            {
                "variant": name,
                "fd_to_unfused": 0.0 if name == "unfused" else frechet_distance(feats, base_feats),
                "fd_to_real": frechet_distance(feats, real_feats),
                "class_accuracy": float((preds == labels).mean()),
                "pixel_rmse_to_unfused": float(np.sqrt((diff**2).mean())),
            }
        )
    return {"rows": rows}


def write_grids(data: dict, folder: Path) -> list[str]:
    """One PNG per variant (10 classes x 10 samples) and one comparison PNG (a row per variant, same noise)."""
    from PIL import Image, ImageDraw

    written = []
    for index, (name, images) in enumerate(data["images"].items()):
        per = min(10, len(images) // 10)
        order = np.concatenate([np.flatnonzero(data["labels"] == c)[:per] for c in range(10)])
        tiles = images[order].reshape(10, per, 32, 32).transpose(0, 2, 1, 3).reshape(320, 32 * per)
        path = folder / f"diffusion_quality_grid_{index:02d}_{_slug(name)}.png"
        Image.fromarray(tiles).resize((tiles.shape[1] * 2, 640), Image.NEAREST).save(path)
        written.append(path.name)
    names = list(data["images"])
    canvas = Image.new("L", (170 + 12 * 66, 66 * len(names)), 255)
    draw = ImageDraw.Draw(canvas)
    for row, name in enumerate(names):
        draw.text((4, 66 * row + 28), name, fill=0)
        for col in range(min(12, len(data["labels"]))):
            tile = Image.fromarray(data["images"][name][col]).resize((64, 64), Image.NEAREST)
            canvas.paste(tile, (170 + 66 * col, 66 * row))
    path = folder / "diffusion_quality_comparison.png"
    canvas.save(path)
    return [*written, path.name]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c == "." else "_" for c in name).replace("__", "_")


def _without_history(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k not in ("history", "resumed_from")}
    if record.get("resumed_from"):
        out["resumed_from"] = _without_history(record["resumed_from"])
    return out


def _train_minutes(record: dict) -> float:
    """Wall-clock training minutes, a resumed run's earlier phases included."""
    total = 0.0
    while record:
        total += record.get("train_seconds", 0.0) / 60
        record = record.get("resumed_from") or {}
    return total


def save_samples(data: dict, path: Path) -> None:
    names = list(data["images"])
    arrays = {f"v{i}": data["images"][n] for i, n in enumerate(names)}
    meta = json.dumps({"names": names, "steps": data["steps"], "guidance": data["guidance"]})
    np.savez_compressed(path, labels=data["labels"], meta=np.array(meta), **arrays)


def load_samples(path: Path) -> dict:
    with np.load(path) as handle:
        meta = json.loads(str(handle["meta"]))
        images = {n: handle[f"v{i}"] for i, n in enumerate(meta["names"])}
        return {"labels": handle["labels"], "images": images, "steps": meta["steps"], "guidance": meta["guidance"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["train", "sample", "evaluate"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--minutes", type=float, default=30.0, help="train: wall-clock budget")
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--resume", action="store_true", help="train: start from --checkpoint's weights")
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the Fashion-MNIST idx .gz files")
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--num", type=int, default=200, help="sample: images per variant (a multiple of 10)")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--chunk", type=int, default=200)
    parser.add_argument("--samples", type=Path, default=SAMPLES)
    args = parser.parse_args()
    if args.command == "train":
        images, labels = load_fashion_mnist("train", args.data)
        init, earlier = load_generator(args.checkpoint) if args.resume else (None, None)
        model, record = train(images, labels, args.minutes, args.max_steps, args.device, init)
        if earlier:
            record["resumed_from"] = earlier
        save_generator(model, record, args.checkpoint)
    elif args.command == "sample":
        model, _ = load_generator(args.checkpoint)
        sample_all(model, args.num, args.steps, args.guidance, args.device, args.chunk, args.samples)
    else:
        data = load_samples(args.samples)
        _, record = load_generator(args.checkpoint)
        table = evaluate(data)
        grids = write_grids(data, RESULTS)
        payload = {
            "environment": environment(),
            "generator": _without_history(record),
            "sampling": {
                "images_per_variant": len(data["labels"]),
                "steps": data["steps"],
                "guidance": data["guidance"],
            },
            "features": "benchmarks/models/fashion_vit.safetensors, pre-logits (64-d)",
            "interpretation": INTERPRETATION.format(
                params=sum(v.numel() for v in load_generator(args.checkpoint)[0].parameters()) / 1e6,
                steps=data["steps"],
                guidance=data["guidance"],
                minutes=_train_minutes(record),
                num=len(data["labels"]),
            ),
            **table,
            "grids": grids,
        }
        write_json(RESULTS / "diffusion_quality.json", payload)
        for row in table["rows"]:
            print(
                f"| {row['variant']} | {row['fd_to_unfused']:.3f} | {row['fd_to_real']:.3f} | "
                f"{row['class_accuracy']:.3f} | {row['pixel_rmse_to_unfused']:.4f} |"
            )


if __name__ == "__main__":
    main()
