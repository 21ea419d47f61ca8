import pytest

from tofu_edge import ConfigError, FusionConfig, ScheduleError, StepOp, create_model, describe_vit, resolve_plan
from tofu_edge.arch import max_reduction, split_sizes
from tofu_edge.plan import schedule_r


@pytest.fixture(scope="module")
def deit_s():
    return describe_vit(create_model("deit_small_patch16_224"))


@pytest.mark.parametrize("r, gmacs", [(0, 4.60), (8, 3.42), (13, 2.71)])
def test_deit_s_macs_match_published_counts(deit_s, r, gmacs):
    assert round(resolve_plan(FusionConfig(r=r), deit_s).macs / 1e9, 2) == gmacs


def test_clamped_r16_matches_tome_count(deit_s):
    plan = resolve_plan(FusionConfig(r=16, clamp=True), deit_s)
    assert plan.r_schedule == (16,) * 11 + (10,)
    assert round(plan.macs / 1e9, 2) == 2.29


def test_impossible_r_names_the_block_and_limit(deit_s):
    with pytest.raises(ScheduleError, match=r"block 11: r=16 is more than it can remove \(10\)"):
        resolve_plan(FusionConfig(r=16), deit_s)


def test_tofu_prunes_below_switch_and_merges_from_it(deit_s):
    plan = resolve_plan(FusionConfig(r=8, mode="tofu", switch=3), deit_s)
    assert [b.op for b in plan.blocks] == [StepOp.PRUNE] * 3 + [StepOp.MLERP] * 9


def test_default_is_mlerp_in_every_block(deit_s):
    assert {b.op for b in resolve_plan(FusionConfig(r=8), deit_s).blocks} == {StepOp.MLERP}


def test_tofu_default_switch_prunes_block_0_only(deit_s):
    plan = resolve_plan(FusionConfig(r=8, mode="tofu"), deit_s)
    assert [b.op for b in plan.blocks] == [StepOp.PRUNE] + [StepOp.MLERP] * 11


def test_prop_attn_only_once_sizes_differ(deit_s):
    plan = resolve_plan(FusionConfig(r=8, mode="tofu", switch=3), deit_s)
    assert [b.prop_attn for b in plan.blocks] == [False] * 4 + [True] * 8


def test_switch_past_the_end_is_an_error(deit_s):
    with pytest.raises(ScheduleError, match="switch=13 is past the last block"):
        resolve_plan(FusionConfig(r=1, switch=13), deit_s)


def test_explicit_list_is_padded_with_zeros(deit_s):
    assert resolve_plan(FusionConfig(r=[5, 4]), deit_s).r_schedule == (5, 4) + (0,) * 10


def test_list_longer_than_model_is_an_error(deit_s):
    with pytest.raises(ScheduleError, match="r lists 13 blocks but the model has 12"):
        resolve_plan(FusionConfig(r=[1] * 13), deit_s)


def test_tome_decreasing_schedule():
    rs = schedule_r(FusionConfig(r=13, inflection=-0.5), 12)
    assert rs[0] == 19 and rs[-1] == 7 and rs == sorted(rs, reverse=True)


@pytest.mark.parametrize("keep", [0.9, 0.75, 0.6, 0.5])
def test_keep_target_is_met_from_below_and_closely(deit_s, keep):
    plan = resolve_plan(FusionConfig(keep=keep), deit_s)
    ratio = plan.macs / plan.unfused_macs
    assert keep - 0.01 < ratio <= keep


def test_keep_out_of_reach_is_an_error(deit_s):
    with pytest.raises(ScheduleError, match="keep=0.05 is out of reach"):
        resolve_plan(FusionConfig(keep=0.05), deit_s)


@pytest.mark.parametrize(
    "num_tokens, num_prefix, sizes",
    [(17, 1, (8, 8)), (18, 2, (8, 8)), (16, 0, (8, 8)), (21, 5, (8, 8)), (6, 1, (2, 3))],
)
def test_split_sizes(num_tokens, num_prefix, sizes):
    assert split_sizes(num_tokens, num_prefix) == sizes


def test_no_reduction_without_destinations():
    assert max_reduction(3, 2) == 0  # one non-prefix token, at an even position: nothing to merge into


def test_ops_set_each_blocks_operation_and_must_cover_every_block(deit_s):
    ops = ["prune"] * 2 + ["mean"] + ["mlerp"] * 9
    plan = resolve_plan(FusionConfig(r=13, ops=ops), deit_s)
    assert [b.op.value for b in plan.blocks] == ops
    with pytest.raises(ScheduleError, match="ops lists 3 operations but deit_small_patch16_224 has 12 blocks"):
        resolve_plan(FusionConfig(r=13, ops=ops[:3]), deit_s)


@pytest.mark.parametrize("r", [8, 13, 16])
def test_align_lands_every_step_on_a_multiple_at_the_same_macs(deit_s, r):
    base = resolve_plan(FusionConfig(r=r, clamp=True), deit_s)
    aligned = resolve_plan(FusionConfig(r=r, clamp=True, align=8), deit_s)
    assert all(b.tokens_out % 8 == 0 for b in aligned.blocks if b.r > 0)
    assert aligned.macs == pytest.approx(base.macs, rel=0.01)
    assert all(b.r <= max_reduction(b.tokens_in, b.num_prefix) for b in aligned.blocks)


def test_align_that_cannot_keep_the_macs_is_a_schedule_error(deit_s):
    with pytest.raises(ScheduleError, match="align=64: no schedule"):
        resolve_plan(FusionConfig(r=2, align=64), deit_s)


def test_align_must_be_a_positive_int():
    with pytest.raises(ConfigError, match="align must be a token count"):
        FusionConfig(r=2, align=0)
