"""The committed Fashion-MNIST checkpoint of the accuracy study loads, and fusing it at r=0 changes nothing."""

from __future__ import annotations

import pytest
import torch

import tofu_edge

pytest.importorskip("safetensors")
study = pytest.importorskip("benchmarks.accuracy_study")

pytestmark = pytest.mark.skipif(not study.CHECKPOINT.is_file(), reason=f"{study.CHECKPOINT} is missing")

BATCH = 4


def test_checkpoint_loads_strictly_with_its_training_record():
    model, training = study.load_model(study.CHECKPOINT)
    assert len(model.blocks) == study.ARCH["depth"]
    assert training is not None and training["epochs"] > 0


def test_fusing_the_checkpoint_at_r0_gives_identical_logits():
    model, _ = study.load_model(study.CHECKPOINT)
    images = torch.randn(BATCH, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(images)
        tofu_edge.fuse(model, tofu_edge.FusionConfig(r=0))
        fused = model(images)
    assert expected.shape == (BATCH, study.ARCH["num_classes"])
    torch.testing.assert_close(fused, expected, rtol=0.0, atol=0.0)
