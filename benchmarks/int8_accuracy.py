"""Top-1 of float fused vs INT8 fused models on real weights, both run from their ONNX files in onnxruntime (CPU).

Usage: python -m benchmarks.int8_accuracy [--test 2000] [--rs 8,13,16] [--toy-rs 2,4,6] [--skip-dinov2] [--skip-toy]

1. DINOv2 ViT-S/14 (real weights, `benchmarks.dinov2`) with a Fashion-MNIST linear probe (`benchmarks.fashion_mnist`'s
   data and preprocessing at 224 px): the probe (multinomial logistic regression on standardised features, the same
   objective as that module's, fitted with scikit-learn) is trained on the *unfused float* model's features of
   ``--train`` images and applied unchanged to every variant's features of ``--test`` other images: float and INT8,
   unfused and fused at each r.
2. The toy Fashion-MNIST ViT (`benchmarks.accuracy_study`, committed weights, its own head): all 10,000 test images.
   It has 8 blocks and 64 + 1 tokens, so r = 8 would remove every patch by block 8 and 13/16 are impossible; it is
   fused at r = 2, 4, 6 (48 of its 64 patches gone at r = 6). Its 1-channel patch embedding is re-expressed for 3
   identical channels (weights / 3, exact), because the exporter's parity images are RGB.

INT8: the onnxruntime-cpu recipe (dynamic U8S8, Linear layers only) everywhere, and the TensorRT recipe (symmetric
Q/DQ, calibrated) at the middle r (run in onnxruntime, which computes the same Q/DQ arithmetic). Calibration uses 64
training images outside the probe's draw. Reports each top-1, and INT8 minus float at the same r with its paired
standard error. Writes benchmarks/results/int8_accuracy.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import RESULTS, environment, write_json
from benchmarks.int8_latency import quantize_file, wait_until_idle
from tofu_edge import FusionConfig
from tofu_edge.batches import run_in_batches
from tofu_edge.export import ParityTolerance, export_onnx, ort_session

BATCH = 8  # static batch of the exported files
CALIBRATION = 64
PROBE_C = 0.5  # scikit-learn's C for fashion_mnist's objective (mean CE + 1e-3 ||W||^2) at 1000 training images
FEATURE_TOLERANCE = ParityTolerance(min_cosine=0.999, min_top1_agreement=0.0)  # DINOv2 outputs features: no top-1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--rs", default="8,13,16")
    parser.add_argument("--toy-rs", default="2,4,6")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-dinov2", action="store_true")
    parser.add_argument("--skip-toy", action="store_true")
    parser.add_argument("--max-load", type=float, default=1.0, help="wait for a 1-minute load average below this")
    parser.add_argument("--max-wait", type=float, default=3.0, help="hours to wait for that before running anyway")
    parser.add_argument("--output", default=str(RESULTS / "int8_accuracy.json"))
    args = parser.parse_args()
    load_before = wait_until_idle(args.max_load, args.max_wait * 3600)
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix="int8_accuracy_") as tmp:
        if not args.skip_dinov2:
            results["dinov2_fashion_mnist_probe"] = dinov2_study(args, Path(tmp) / "dinov2")
        if not args.skip_toy:
            results["toy_fashion_mnist_vit"] = toy_study(args, Path(tmp) / "toy")
    env = {
        **environment(args.threads),
        "load_average_before": load_before,
        "seconds": time.perf_counter() - started,
        "ort_threads": args.threads,
    }
    write_json(Path(args.output), {"environment": env, **results})


def dinov2_study(args: argparse.Namespace, folder: Path) -> dict:
    from sklearn.linear_model import LogisticRegression

    from benchmarks.dinov2 import load_dinov2
    from benchmarks.fashion_mnist import sample, to_model_input

    model = load_dinov2(224)
    train_images, train_labels = sample("train", args.train, seed=0)
    test_images, test_labels = sample("t10k", args.test, seed=0)
    calibration = to_model_input(_outside_draw(args.train, CALIBRATION), model).numpy()
    inputs = lambda images: (to_model_input(images[i : i + BATCH], model).numpy() for i in range(0, len(images), BATCH))  # noqa: E731
    files = _variants(model, folder, [int(r) for r in args.rs.split(",")], calibration, FEATURE_TOLERANCE)

    def features(path: Path, images: torch.Tensor) -> np.ndarray:
        return _run(path, inputs(images), args.threads)

    train_x = features(files["float unfused"], train_images)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    probe = LogisticRegression(C=PROBE_C, max_iter=3000).fit((train_x - mean) / std, train_labels.numpy())
    correct = {}
    for name, path in files.items():
        t = time.perf_counter()
        predicted = probe.predict((features(path, test_images) - mean) / std)
        correct[name] = predicted == test_labels.numpy()
        print(
            f"dinov2 {name:26s} top-1 {100 * correct[name].mean():.2f} % ({time.perf_counter() - t:.0f} s)", flush=True
        )
    return _summary(correct, args.test, {"train": args.train, "test": args.test, "calibration": CALIBRATION})


def toy_study(args: argparse.Namespace, folder: Path) -> dict:
    from benchmarks.accuracy_study import load_fashion_mnist, to_input

    model = _three_channel_toy()
    test_images, test_labels = load_fashion_mnist("t10k")
    calibration = _rgb(to_input(_outside_draw(0, CALIBRATION))).numpy()
    files = _variants(model, folder, [int(r) for r in args.toy_rs.split(",")], calibration, ParityTolerance())
    correct = {}
    for name, path in files.items():
        batches = (_rgb(to_input(test_images[i : i + BATCH])).numpy() for i in range(0, len(test_images), BATCH))
        correct[name] = _run(path, batches, args.threads).argmax(1) == test_labels.numpy()
        print(f"toy {name:26s} top-1 {100 * correct[name].mean():.2f} %", flush=True)
    return _summary(correct, len(test_labels), {"test": len(test_labels), "calibration": CALIBRATION})


def _variants(model, folder: Path, rs: list[int], calibration: np.ndarray, tolerance: ParityTolerance) -> dict:
    """Float files (exported, parity-checked) and their INT8 versions: dynamic at every r, TensorRT's at the middle."""
    folder.mkdir(parents=True)
    files = {}
    for r in [0, *rs]:
        label = "unfused" if r == 0 else f"r={r}"
        started = time.perf_counter()
        path = folder / f"float_r{r}.onnx"
        export_onnx(model, path, FusionConfig(r=r, clamp=True), batch=BATCH, tolerance=tolerance)
        files[f"float {label}"] = path
        files[f"int8 {label}"] = folder / f"int8_r{r}.onnx"
        quantize_file(path, files[f"int8 {label}"], "dynamic", model)
        if r == rs[len(rs) // 2]:
            files[f"int8-tensorrt {label}"] = folder / f"int8_trt_r{r}.onnx"
            quantize_file(path, files[f"int8-tensorrt {label}"], "symmetric-qdq", model, calibration)
        print(f"exported and quantized {label} in {time.perf_counter() - started:.0f} s", flush=True)
    return files


def _summary(correct: dict[str, np.ndarray], images: int, counts: dict) -> dict:
    """Top-1 per variant, and each INT8 variant minus the float one at the same r, with the paired standard error."""
    rows = {name: {"top1": float(c.mean())} for name, c in correct.items()}
    for name, c in correct.items():
        precision, label = name.split(" ", 1)
        if precision != "float":
            diff = c.astype(float) - correct[f"float {label}"].astype(float)
            rows[name]["minus_float_points"] = 100 * float(diff.mean())
            rows[name]["paired_se_points"] = 100 * float(diff.std(ddof=1) / np.sqrt(len(diff)))
            rows[name]["disagreements"] = int((c != correct[f"float {label}"]).sum())
    return {"images": images, **counts, "variants": rows}


def _run(path: Path, batches, threads: int) -> np.ndarray:
    """Outputs of an ONNX file (static batch ``BATCH``; the last batch padded) over batches of inputs."""
    session = ort_session(path, threads=threads)
    name = session.get_inputs()[0].name
    run = lambda images: session.run(None, {name: images.astype(np.float32)})[0]  # noqa: E731
    return np.concatenate([run_in_batches(run, batch, BATCH) for batch in batches])


def _outside_draw(drawn: int, count: int) -> torch.Tensor:
    """``count`` training images outside the first ``drawn`` of `fashion_mnist.sample`'s seed-0 permutation."""
    from benchmarks.accuracy_study import load_fashion_mnist

    images, _ = load_fashion_mnist("train")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    return images[order[drawn : drawn + count]]


def _rgb(images: torch.Tensor) -> torch.Tensor:
    return images.expand(-1, 3, -1, -1).contiguous()


def _three_channel_toy() -> torch.nn.Module:
    """The toy ViT with its patch embedding over 3 identical channels: conv weights / 3, repeated (same outputs)."""
    import timm

    from benchmarks.accuracy_study import ARCH, load_model

    model, _ = load_model()
    state = model.state_dict()
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"].repeat(1, 3, 1, 1) / 3
    rgb = timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**ARCH, "in_chans": 3}).eval()
    rgb.load_state_dict(state, strict=True)
    return rgb


if __name__ == "__main__":
    main()
