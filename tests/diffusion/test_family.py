"""`Family`: every supported diffusers class has one, its step inputs and its call come from it."""

from __future__ import annotations

import pytest
import torch

from tofu_edge.diffusion import Family
from tofu_edge.diffusion.family import family_of
from tofu_edge.diffusion.inputs import call_step, example_inputs, input_family
from tofu_edge.diffusion.models import create_diffusion_model


@pytest.mark.parametrize(
    "preset, family", [("tiny-unet", Family.UNET), ("tiny-dit", Family.DIT), ("tiny-pixart", Family.PIXART)]
)
def test_each_preset_has_its_family_and_one_step_runs_from_its_inputs(preset, family):
    model = create_diffusion_model(preset)
    assert family_of(model) is family and input_family(model) is family
    feed = example_inputs(model, family, (8, 8), batch=1, encoder_length=None, seed=0)
    with torch.no_grad():
        out = call_step(model, family, tuple(feed.values()))
    assert out.shape[0] == 1 and out.shape[-2:] == (8, 8)


def test_a_model_of_no_family_has_none():
    assert family_of(torch.nn.Linear(2, 2)) is None
