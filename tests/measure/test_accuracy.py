"""Accuracy measurement: metric math on hand-made logits, the Pareto front, and the ImageFolder reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tofu_edge.errors import ConfigError, TofuError
from tofu_edge.measure.accuracy import MetricAccumulator
from tofu_edge.measure.dataset import UNLABELLED, find_images
from tofu_edge.measure.plot import pareto_front

CLASSES = ("cat", "dog", "eel")
PER_CLASS = 2
EXACT = 1e-12


def make_folder(root: Path, classes=CLASSES, per_class: int = PER_CLASS) -> Path:
    """A tiny ImageFolder of random-noise PNGs (40x40, seeded)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return root


# --- metric math --------------------------------------------------------------------------------------------------


def test_metrics_on_hand_made_logits():
    logits = np.array(
        [
            [9.0, 1, 2, 3, 4, 5, 0],  # top-1 = 0 (right)
            [0.0, 9, 8, 7, 6, 5, 4],  # top-1 = 1, label 5 is 5th (top-5 right, top-1 wrong)
            [0.0, 9, 8, 7, 6, 5, 4],  # label 6 is 6th: wrong in both
            [1.0, 2, 3, 4, 5, 6, 7],  # top-1 = 6 (right)
        ]
    )
    labels = np.array([0, 5, 6, 6])
    reference = logits.copy()
    reference[3] = -logits[3]  # top-1 = 0: disagrees, cosine -1
    total = MetricAccumulator()
    total.update(logits[:2], labels[:2], reference[:2], seconds=0.5)
    total.update(logits[2:], labels[2:], reference[2:], seconds=0.5)
    metrics = total.result()
    assert metrics.images == 4
    assert metrics.top1 == pytest.approx(2 / 4, abs=EXACT)
    assert metrics.top5 == pytest.approx(3 / 4, abs=EXACT)
    assert metrics.top1_agreement == pytest.approx(3 / 4, abs=EXACT)
    assert metrics.mean_cosine == pytest.approx((1 + 1 + 1 - 1) / 4, abs=EXACT)
    assert metrics.min_cosine == pytest.approx(-1.0, abs=EXACT)
    assert metrics.images_per_s == pytest.approx(4.0, abs=EXACT)


def test_orthogonal_outputs_have_cosine_zero_and_few_classes_use_top_all():
    total = MetricAccumulator()
    total.update(np.array([[1.0, 0.0]]), np.array([1]), np.array([[0.0, 1.0]]))
    metrics = total.result()
    assert metrics.mean_cosine == pytest.approx(0.0, abs=EXACT)
    assert (metrics.top1, metrics.top5, metrics.top1_agreement) == (0.0, 1.0, 0.0)


def test_pareto_front_keeps_points_nothing_beats_in_speed_and_accuracy():
    speed = [100.0, 150.0, 120.0, 200.0]
    value = [80.0, 79.0, 70.0, 60.0]
    assert pareto_front(speed, value) == [3, 1, 0]


# --- the ImageFolder reader ---------------------------------------------------------------------------------------


def test_classes_sorted_by_name_give_labels_and_limit_spreads(tmp_path):
    root = make_folder(tmp_path / "data", classes=("b", "a", "c"))
    found = find_images(root)
    assert found.classes == ("a", "b", "c")
    assert [label for _, label in found.samples] == [0, 0, 1, 1, 2, 2]
    assert [label for _, label in find_images(root, limit=3).samples] == [0, 1, 2]


def test_a_flat_folder_is_unlabelled_photos(tmp_path):
    root = make_folder(tmp_path / "data", classes=("cat",), per_class=3) / "cat"
    (root / ".hidden.png").write_bytes(b"")
    dataset = find_images(root, limit=2)
    assert not dataset.labelled and dataset.classes == ()
    assert [path.name for path, _ in dataset.samples] == ["0.png", "1.png"]
    assert {label for _, label in dataset.samples} == {UNLABELLED}


def test_numeric_labels_take_folder_names_as_class_indices(tmp_path):
    root = make_folder(tmp_path / "data", classes=("207", "3"), per_class=1)
    assert sorted(label for _, label in find_images(root, numeric_labels=True).samples) == [3, 207]
    (root / "cat").mkdir()
    (root / "cat" / "x.png").write_bytes((root / "3" / "0.png").read_bytes())
    with pytest.raises(ConfigError, match="is not a class index"):
        find_images(root, numeric_labels=True)


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "does not exist"),
        ("flat", "holds no .jpg/.jpeg/.png/.bmp/.webp files"),
        ("empty", "has no .jpg/.jpeg/.png/.bmp/.webp files"),
    ],
)
def test_bad_dataset_folders_are_named(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "flat":
        (root / "notes.txt").write_text("not an image")
    if layout == "empty":
        (root / "cat").mkdir()
    with pytest.raises(TofuError, match=message):
        find_images(root)
