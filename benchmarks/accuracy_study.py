"""Top-1 of a small ViT trained on Fashion-MNIST, fused with mean / mlerp / prune / tofu (switch swept) at several r.

Usage: python -m benchmarks.accuracy_study [--train] [--limit 10000] [--rs 2,4,6]
Needs the Debian package dataset-fashion-mnist (files in /usr/share/datasets/fashion-mnist). Without --train it
loads benchmarks/models/fashion_vit.safetensors; with --train it trains that model first (about 13 minutes on 2
idle cores) and overwrites the file. Writes benchmarks/results/accuracy_study.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F

import tofu_edge
from benchmarks.common import RESULTS, environment, write_json
from tofu_edge import FusionConfig

DATA = Path("/usr/share/datasets/fashion-mnist")
CHECKPOINT = Path(__file__).parent / "models" / "fashion_vit.safetensors"

# vit_tiny_patch16_224 re-shaped for 32x32 grey images: 8x8 patches of 4x4 pixels, 64 + class = 65 tokens
ARCH = dict(img_size=32, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=8, num_heads=2)
TRAIN = dict(
    seed=0,
    epochs=5,
    batch=128,
    lr=1e-3,
    weight_decay=0.05,
    warmup_steps=300,
    label_smoothing=0.1,
    augment="random shift of up to 2 px (28x28 zero-padded to 36x36, random 32x32 crop) + horizontal flip",
)
# Fashion-MNIST pixel statistics (train set, [0, 1] scale)
MEAN, STD = 0.2860, 0.3530
EVAL_BATCH = 500


def build_model() -> torch.nn.Module:
    """The study's ViT (random weights), in eval mode."""
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **ARCH).eval()


def load_model(path: Path = CHECKPOINT) -> tuple[torch.nn.Module, dict | None]:
    """The study's ViT with the committed weights, and the training record stored in the file's metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    model = build_model()
    model.load_state_dict(load_file(path), strict=True)
    with safe_open(str(path), framework="pt") as handle:
        training = (handle.metadata() or {}).get("training")
    return model, json.loads(training) if training else None


def save_model(model: torch.nn.Module, training: dict, path: Path = CHECKPOINT) -> None:
    """Write the weights as safetensors (atomically), with the training record as metadata."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"training": json.dumps(training), "arch": json.dumps(ARCH)})
    tmp.replace(path)


def load_fashion_mnist(split: str, root: Path = DATA) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of one split from the idx files.

    Args:
        split: ``train`` (60k) or ``t10k`` (10k).

    Shapes:
        returns: images [N, 28, 28] uint8, labels [N] int64
    """
    with gzip.open(root / f"{split}-images-idx3-ubyte.gz", "rb") as handle:
        raw = handle.read()
    magic, count, rows, cols = np.frombuffer(raw, dtype=">i4", count=4)
    if magic != 2051:
        raise ValueError(f"{split} images: bad idx magic {magic}")
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    with gzip.open(root / f"{split}-labels-idx1-ubyte.gz", "rb") as handle:
        raw = handle.read()
    magic, label_count = np.frombuffer(raw, dtype=">i4", count=2)
    if magic != 2049 or label_count != count:
        raise ValueError(f"{split} labels: bad idx magic {magic} or count {label_count} != {count}")
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def to_input(images: torch.Tensor) -> torch.Tensor:
    """Centre 28x28 images in 32x32 (zero padding) and normalise.

    Shapes:
        images: [B, 28, 28] uint8
        returns: [B, 1, 32, 32] float32
    """
    padded = F.pad(images, (2, 2, 2, 2))
    return ((padded.float() / 255.0 - MEAN) / STD).unsqueeze(1)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shift (up to 2 px) and horizontal flip, then normalise.

    Shapes:
        images: [B, 28, 28] uint8
        returns: [B, 1, 32, 32] float32
    """
    batch = images.shape[0]
    padded = F.pad(images, (4, 4, 4, 4))  # [B, 36, 36]
    offset = torch.randint(0, 5, (2, batch), generator=generator)
    steps = torch.arange(32)
    rows = (offset[0, :, None] + steps)[:, :, None]  # [B, 32, 1]
    cols = offset[1, :, None] + steps  # [B, 32]
    flip = torch.rand(batch, generator=generator) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :]  # [B, 1, 32]
    crops = padded[torch.arange(batch)[:, None, None], rows, cols]
    return ((crops.float() / 255.0 - MEAN) / STD).unsqueeze(1)


def train(images: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int) -> tuple[torch.nn.Module, dict]:
    """Train the study's ViT from scratch (AdamW, warm-up then cosine, label smoothing); seeded.

    Returns:
        The model in eval mode and a record of the run (config, per-epoch loss, seconds).
    """
    config = {**TRAIN, "epochs": epochs, "seed": seed, "threads": torch.get_num_threads()}
    torch.manual_seed(config["seed"])
    generator = torch.Generator().manual_seed(config["seed"])
    model = build_model().train()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or "pos_embed" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config["lr"],
    )
    steps_per_epoch = len(images) // config["batch"]
    total = epochs * steps_per_epoch

    def schedule(step: int) -> float:
        if step < config["warmup_steps"]:
            return (step + 1) / config["warmup_steps"]
        progress = (step - config["warmup_steps"]) / max(1, total - config["warmup_steps"])
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    history, start = [], time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        running = 0.0
        for step in range(steps_per_epoch):
            index = order[step * config["batch"] : (step + 1) * config["batch"]]
            logits = model(augment(images[index], generator))
            loss = F.cross_entropy(logits, labels[index], label_smoothing=config["label_smoothing"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item()
        history.append({"epoch": epoch, "loss": running / steps_per_epoch, "seconds": time.perf_counter() - start})
        print(f"epoch {epoch}: loss {history[-1]['loss']:.4f} ({history[-1]['seconds']:.0f} s)", file=sys.stderr)
    record = {**config, "steps": total, "train_seconds": time.perf_counter() - start, "history": history}
    return model.eval(), record


def predict(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Top-1 class of every image, in batches of `EVAL_BATCH`.

    Shapes:
        images: [N, 28, 28] uint8
        returns: [N] int64
    """
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), EVAL_BATCH):
            out.append(model(to_input(images[start : start + EVAL_BATCH])).argmax(-1))
    return torch.cat(out)


def variants(num_blocks: int, rs: list[int]) -> list[tuple[str, FusionConfig]]:
    """Every fused configuration of the study.

    ``tofu`` with switch 0 is ``mlerp`` everywhere and switch ``L`` is ``prune`` everywhere, so the sweep
    runs switch 1 .. L-1 and the two ends as their own modes.
    """
    out = []
    for r in rs:
        out.append((f"mean r={r}", FusionConfig(r=r, mode="mean", clamp=True)))
        out.append((f"mlerp r={r}", FusionConfig(r=r, mode="mlerp", clamp=True)))
        out.append((f"prune r={r}", FusionConfig(r=r, mode="prune", clamp=True)))
        for switch in range(1, num_blocks):
            out.append((f"tofu r={r} switch={switch}", FusionConfig(r=r, mode="tofu", switch=switch, clamp=True)))
    sanity_r = rs[len(rs) // 2]
    out.append((f"mean r={sanity_r} no-prop-attn", FusionConfig(r=sanity_r, mode="mean", prop_attn=False, clamp=True)))
    return out


def paired(correct: torch.Tensor, reference: torch.Tensor) -> dict:
    """Accuracy difference to a reference on the same images, with its paired standard error.

    Shapes:
        correct, reference: [N] bool
    """
    n = len(correct)
    gained = int((correct & ~reference).sum())
    lost = int((~correct & reference).sum())
    diff = (gained - lost) / n
    se = math.sqrt(max(0.0, (gained + lost) / n - diff * diff) / n)
    return {"diff": diff, "se": se, "gained": gained, "lost": lost}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="example: python -m benchmarks.accuracy_study --limit 2000 --rs 4",
    )
    parser.add_argument("--train", action="store_true", help="train the model and overwrite the checkpoint")
    parser.add_argument("--epochs", type=int, default=TRAIN["epochs"])
    parser.add_argument("--seed", type=int, default=TRAIN["seed"], help="training seed (with --train)")
    parser.add_argument("--limit", type=int, default=10000, help="first N test images (default: all 10k)")
    parser.add_argument("--rs", default="2,4,6", help="comma-separated r values (tokens removed per block)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", default=str(CHECKPOINT))
    parser.add_argument("--output", default=str(RESULTS / "accuracy_study.json"))
    args = parser.parse_args()
    rs = [int(r) for r in args.rs.split(",")]
    checkpoint = Path(args.checkpoint)

    torch.set_num_threads(args.threads)
    if not DATA.is_dir():
        parser.exit(2, f"error: {DATA} not found; install it with `apt-get install dataset-fashion-mnist`\n")
    test_images, test_labels = load_fashion_mnist("t10k")
    test_images, test_labels = test_images[: args.limit], test_labels[: args.limit]

    if args.train:
        model, training = train(*load_fashion_mnist("train"), epochs=args.epochs, seed=args.seed)
        save_model(model, training, checkpoint)
    elif checkpoint.is_file():
        model, training = load_model(checkpoint)
    else:
        parser.exit(2, f"error: checkpoint {checkpoint} not found; pass --train to train it (about 13 minutes)\n")

    start = time.perf_counter()
    base_pred = predict(model, test_images)
    base_correct = base_pred == test_labels
    unfused = {"top1": base_correct.float().mean().item(), "seconds": time.perf_counter() - start}
    print(f"unfused: top-1 {unfused['top1']:.4f} ({unfused['seconds']:.1f} s)", file=sys.stderr)

    results, mean_correct = [], {}
    for name, config in variants(len(model.blocks), rs):
        tofu_edge.fuse(model, config)
        plan = model.tofu_plan
        start = time.perf_counter()
        pred = predict(model, test_images)
        correct = pred == test_labels
        row = {
            "variant": name,
            "r": config.r,
            "mode": config.mode.value,
            "switch": config.switch,
            "prop_attn": config.prop_attn,
            "top1": correct.float().mean().item(),
            "agreement": (pred == base_pred).float().mean().item(),
            "vs_unfused": paired(correct, base_correct),
            "r_schedule": list(plan.r_schedule),
            "block_modes": [b.mode.value for b in plan.blocks],
            "tokens_out": plan.tokens_out,
            "macs_ratio": plan.macs / plan.unfused_macs,
            "seconds": time.perf_counter() - start,
        }
        if config.mode.value == "mean" and config.prop_attn:
            mean_correct[config.r] = correct
        row["vs_mean"] = paired(correct, mean_correct[config.r])
        results.append(row)
        print(
            f"{name:28s} top-1 {row['top1']:.4f}  agree {row['agreement']:.4f}  "
            f"vs mean {100 * row['vs_mean']['diff']:+.2f} ± {100 * row['vs_mean']['se']:.2f}  "
            f"MACs {row['macs_ratio']:.3f}",
            file=sys.stderr,
        )
    tofu_edge.unfuse(model)

    env = {
        **environment(),
        "model": "vit_tiny_patch16_224 re-shaped",
        "arch": ARCH,
        "weights": checkpoint.name,
        "data": f"Fashion-MNIST test set, first {len(test_labels)} images (Debian dataset-fashion-mnist)",
        "eval_batch": EVAL_BATCH,
        "precision": "fp32",
    }
    payload = {"environment": env, "training": training, "unfused": unfused, "results": results}
    write_json(Path(args.output), payload)
    print(render(payload, rs, len(model.blocks)))


def render(payload: dict, rs: list[int], num_blocks: int) -> str:
    """Markdown tables: top-1 by mode x r, and top-1 by switch block x r."""
    rows = {row["variant"]: row for row in payload["results"]}
    head = " | ".join(f"r={r}" for r in rs)
    rule = "|---" * (len(rs) + 1) + "|"
    default = num_blocks // 2
    lines = [f"unfused top-1: {100 * payload['unfused']['top1']:.2f} %", "", f"| mode | {head} |", rule]
    macs = " | ".join(f"{rows[_name('mean', r, 0, num_blocks)]['macs_ratio']:.2f}" for r in rs)
    lines.append(f"| MACs / unfused | {macs} |")
    for label, name in [("mean (ToMe)", "mean"), ("mlerp", "mlerp"), ("prune", "prune"), ("tofu", "tofu")]:
        cells = [_cell(rows[_name(name, r, default, num_blocks)], "agreement") for r in rs]
        lines.append(f"| {label if name != 'tofu' else f'tofu switch={default}'} | {' | '.join(cells)} |")
    lines += ["", "top-1 % (agreement with the unfused model %)", "", f"| switch | {head} |", rule]
    for switch in range(num_blocks + 1):
        cells = [_cell(rows[_name("tofu", r, switch, num_blocks)], "vs_mean") for r in rs]
        lines.append(f"| {switch} | {' | '.join(cells)} |")
    lines += ["", "top-1 % (difference to mean at the same r ± paired standard error, points)"]
    return "\n".join(lines)


def _name(mode: str, r: int, switch: int, num_blocks: int) -> str:
    """The variant name of a tofu switch (its two ends are the mlerp and prune variants) or another mode."""
    if mode == "tofu" and switch in (0, num_blocks):
        mode = "mlerp" if switch == 0 else "prune"
    return f"tofu r={r} switch={switch}" if mode == "tofu" else f"{mode} r={r}"


def _cell(row: dict, extra: str) -> str:
    if extra == "agreement":
        return f"{100 * row['top1']:.2f} ({100 * row['agreement']:.1f})"
    return f"{100 * row['top1']:.2f} ({100 * row['vs_mean']['diff']:+.2f} ± {100 * row['vs_mean']['se']:.2f})"


if __name__ == "__main__":
    main()
