"""Image preprocessing for `run`: the same pixels as timm's evaluation transform, input files, top-k."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from timm.data import create_transform

from tofu_edge.engine import PreprocessConfig, load_input, preprocess_image, top_k
from tofu_edge.errors import InputShapeError, TofuError

EXACT = 1e-6  # same resize, crop and float32 arithmetic: only rounding of the last bit may differ
CASES = [  # (image W, H), engine (H, W), interpolation, crop_pct
    ((300, 200), (224, 224), "bicubic", 0.875),
    ((150, 333), (224, 224), "bilinear", 0.9),
    ((640, 480), (160, 224), "bicubic", 0.95),
    ((224, 224), (224, 224), "bicubic", 1.0),
    ((50, 40), (32, 32), "nearest", 0.875),
]


def photo(size, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("image_size, size, interpolation, crop_pct", CASES)
def test_matches_timm_eval_transform(image_size, size, interpolation, crop_pct):
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.3, 0.25)
    reference = create_transform(
        input_size=(3, *size), crop_pct=crop_pct, interpolation=interpolation, mean=mean, std=std
    )(photo(image_size)).numpy()[None]
    config = PreprocessConfig(mean=mean, std=std, crop_pct=crop_pct, interpolation=interpolation)
    ours = preprocess_image(photo(image_size), size, config)
    assert ours.shape == reference.shape and ours.dtype == np.float32 and ours.flags.c_contiguous
    assert np.abs(ours - reference).max() <= EXACT


def test_grey_and_rgba_images_become_rgb():
    for mode in ("L", "RGBA"):
        assert preprocess_image(photo((40, 40)).convert(mode), (32, 32)).shape == (1, 3, 32, 32)


def test_load_input_reads_images_and_npy_tensors(tmp_path):
    photo((64, 48)).save(tmp_path / "cat.png")
    assert load_input(tmp_path / "cat.png", (1, 3, 32, 32)).shape == (1, 3, 32, 32)
    assert load_input(tmp_path / "cat.png", (-1, 3, 32, 32)).shape == (1, 3, 32, 32)
    np.save(tmp_path / "x.npy", np.ones((3, 32, 32), np.float64))
    tensor = load_input(tmp_path / "x.npy", (1, 3, 32, 32))
    assert tensor.shape == (1, 3, 32, 32) and tensor.dtype == np.float32
    with pytest.raises(InputShapeError, match=r"does not fit the engine input \[1, 3, 64, 64\]"):
        load_input(tmp_path / "x.npy", (1, 3, 64, 64))


def test_load_input_errors(tmp_path):
    with pytest.raises(TofuError, match="does not exist"):
        load_input(tmp_path / "nope.jpg", (1, 3, 32, 32))
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(TofuError, match="cannot read image"):
        load_input(tmp_path / "bad.jpg", (1, 3, 32, 32))


def test_bad_preprocess_values_are_refused():
    with pytest.raises(TofuError, match="crop_pct"):
        PreprocessConfig(crop_pct=0.0)
    with pytest.raises(TofuError, match="unknown interpolation"):
        PreprocessConfig(interpolation="cubic")


def test_top_k_is_a_softmax_ranking_with_stable_ties():
    top = top_k(np.array([1.0, 3.0, 3.0, -2.0], np.float32), 3)
    assert [i for i, _ in top] == [1, 2, 0]
    probabilities = np.exp([1.0, 3.0, 3.0, -2.0]) / np.exp([1.0, 3.0, 3.0, -2.0]).sum()
    assert top[0][1] == pytest.approx(probabilities[1], rel=1e-12)
    assert len(top_k(np.zeros(3), 10)) == 3
