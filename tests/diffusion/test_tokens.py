"""The static partition, the exact match and the gather-only unmerge, against the loop reference."""

from __future__ import annotations

import pytest
import torch

import tofu_edge.diffusion as td
from tests.diffusion.conftest import tiny_model
from tofu_edge.config import StepOp
from tofu_edge.diffusion.config import Destinations
from tofu_edge.diffusion.reference import reference_merge_unmerge
from tofu_edge.diffusion.tokens import grid_partition, match_grid, merge_tokens, unmerge_tokens

TOLERANCE = 1e-5  # float32 vectorized step against the float64-matched loop reference


def test_one_destination_per_cell_and_leftovers_in_a():
    partition = grid_partition(5, 6, 2, 2, Destinations.CORNER)
    assert partition.b_pos == (0, 2, 4, 12, 14, 16)  # top-left of each full 2x2 cell; row 4 has none
    assert sorted(partition.a_pos + partition.b_pos) == list(range(30))
    order = partition.a_pos + partition.b_pos
    assert all(order[partition.partition_index[p]] == p for p in range(30))


def test_cycle_moves_the_destination_within_and_between_modules():
    first = grid_partition(4, 4, 2, 2, Destinations.CYCLE, module_index=0)
    second = grid_partition(4, 4, 2, 2, Destinations.CYCLE, module_index=1)
    assert first.b_pos == (0, 3, 12, 15)  # offsets 0, 1 in cell row 0; 2, 3 in cell row 1
    assert set(first.b_pos).isdisjoint(second.b_pos)
    assert len(second.b_pos) == 4


@pytest.mark.parametrize("op", list(StepOp))
@pytest.mark.parametrize("destinations", list(Destinations))
def test_merge_then_unmerge_matches_the_loop_reference(op, destinations):
    torch.manual_seed(0)
    partition = grid_partition(6, 6, 2, 2, destinations, module_index=3)
    x = torch.randn(2, 36, 8)
    x[1, 7] = x[1, 0]  # an exact tie between two A tokens' scores
    layer = torch.nn.Linear(8, 5)
    match, slot = match_grid(x, partition, r=13)
    got = unmerge_tokens(layer(merge_tokens(x, match, op)), slot)
    for i in range(2):
        want = reference_merge_unmerge(x[i], partition, 13, op, layer)
        torch.testing.assert_close(got[i], want, atol=TOLERANCE, rtol=TOLERANCE)


def test_flat_tokens_tie_everywhere_and_stay_flat():
    partition = grid_partition(4, 4, 2, 2, Destinations.CYCLE)
    x = torch.ones(1, 16, 4)
    match, slot = match_grid(x, partition, r=8)
    assert match.num_out == 8
    assert torch.equal(unmerge_tokens(merge_tokens(x, match, StepOp.MLERP), slot), x)


def test_fused_attention_matches_the_reference_in_a_model():
    model = tiny_model("unet")
    td.apply(model, td.DiffusionFusionConfig(ratio=0.5, op="mlerp"))
    attn = model.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    step = attn.tofu_step
    x = torch.randn(1, 256, 32)
    with torch.no_grad():
        got = attn(x)[0]
        td.remove(model)
        want = reference_merge_unmerge(x[0], step.partition, step.r, step.op, lambda t: attn(t[None])[0])
    torch.testing.assert_close(got, want, atol=TOLERANCE, rtol=TOLERANCE)
