"""The parts of `tofu-edge tune`: targets, candidate schedules, the cost model, ranking and the Pareto front,
and the cache."""

from __future__ import annotations

import json

import pytest

from tofu_edge.config import Mode
from tofu_edge.errors import ConfigError
from tofu_edge.models import create_model
from tofu_edge.patch import describe_vit
from tofu_edge.tune.cache import TuneCache
from tofu_edge.tune.candidates import op_variants, token_schedules, unfused_candidate
from tofu_edge.tune.cost import CostModel
from tofu_edge.tune.latency import Measurement
from tofu_edge.tune.points import Point, pareto_front, rank
from tofu_edge.tune.search import _coarse_to_fine
from tofu_edge.tune.target import Fidelity, Target, TargetKind


@pytest.fixture(scope="module")
def arch():
    return describe_vit(create_model("deit_tiny_patch16_224", img_size=128))  # 65 tokens, 12 blocks: r up to 5


def test_exactly_one_target_with_a_sane_value():
    assert Target.from_options(speedup=1.5, min_cosine=None) == Target(TargetKind.SPEEDUP, 1.5)
    with pytest.raises(ConfigError, match="give exactly one target"):
        Target.from_options(speedup=1.5, min_cosine=0.99)
    with pytest.raises(ConfigError, match="give exactly one target"):
        Target.from_options(speedup=None)
    for kind, value in (("speedup", 0), ("min-cosine", 1.5), ("max-top1-drop", -1), ("latency-ms", -3)):
        with pytest.raises(ConfigError, match=f"--{kind} takes"):
            Target(kind, value)


def test_targets_judge_speed_and_fidelity():
    speed, cosine = Target("speedup", 1.5), Target("min-cosine", 0.99)
    assert speed.wants_speed and not cosine.wants_speed
    assert speed.speed_ok(1.5, 10.0) and not speed.speed_ok(1.49, 1.0)
    assert cosine.fidelity_ok(Fidelity(0.99)) and not cosine.fidelity_ok(Fidelity(0.989))
    assert Target("latency-ms", 10).speed_ok(1.0, 9.9) and not Target("latency-ms", 10).speed_ok(9.0, 10.1)
    drop = Target("max-top1-drop", 1.0)
    assert drop.fidelity_ok(Fidelity(0.9, 0.99, 1.0)) and not drop.fidelity_ok(Fidelity(0.9, None, None))
    assert speed.shortfall(1.2, 0, Fidelity(1.0)) == pytest.approx(0.2)
    assert cosine.shortfall(9.0, 0, Fidelity(1.0)) == 0.0


def test_token_schedules_are_distinct_runnable_and_span_the_range(arch):
    schedules = token_schedules(arch)
    assert len({c.r_schedule for c in schedules}) == len(schedules)
    assert all(c.steps > 0 and c.config.mode is Mode.MLERP for c in schedules)
    ratios = [c.macs_ratio for c in schedules]
    assert ratios == sorted(ratios, reverse=True) and ratios[0] > 0.9 and ratios[-1] < 0.6
    names = " ".join(c.name for c in schedules)
    assert "inflection=-1" in names and "keep=" in names and "r=1" in names
    assert unfused_candidate(arch).steps == 0 and unfused_candidate(arch).macs_ratio == 1.0


def test_op_variants_keep_the_token_schedule(arch):
    base = next(c for c in token_schedules(arch) if c.name == "mlerp r=1")
    variants = op_variants(base, arch)
    assert [v.name for v in variants] == ["mean r=1", "tofu r=1 switch=1", "tofu r=1 switch=2"]
    assert all(v.r_schedule == base.r_schedule and v.key != base.key for v in variants)
    assert base.quantized().name == "mlerp r=1 +int8" and base.quantized().key != base.key


def test_cost_model_recovers_a_linear_latency(arch):
    schedules = token_schedules(arch)
    truth = [1.0, 0.8, 0.3 / arch.num_blocks]  # ratio = 1 + 0.8 (macs - 1) + 0.3 steps / L

    def ratio(c):
        return truth[0] + truth[1] * (c.macs_ratio - 1) + truth[2] * c.steps

    model = CostModel(arch.num_blocks)
    assert not model.ready() and model.predict(schedules[0]) is None
    for c in (schedules[0], schedules[len(schedules) // 2]):
        model.add(c, ratio(c))
    assert all(model.predict(c) == pytest.approx(ratio(c), rel=1e-6) for c in schedules)
    int8 = CostModel(arch.num_blocks)
    int8.add(unfused_candidate(arch).quantized(), 0.5)
    assert not int8.ready(int8=True)
    int8.add(schedules[-1].quantized(), 0.3)
    assert int8.ready(int8=True) and int8.predict(unfused_candidate(arch).quantized()) == pytest.approx(0.5)


def _point(arch, name, cosine, speedup, measured=True):
    candidate = next(c for c in token_schedules(arch) if c.name == name)
    point = Point(candidate, Fidelity(cosine))
    if measured:
        point.measurement = Measurement(speedup, 10 / speedup, 10.0, 50)
    else:
        point.predicted_ratio = 1 / speedup
    return point


def test_rank_and_front_follow_the_target(arch):
    a, b, c = (
        _point(arch, "mlerp r=1", 0.999, 1.2),
        _point(arch, "mlerp r=2", 0.99, 1.6),
        _point(arch, "mlerp r=3", 0.98, 1.5, measured=False),
    )
    assert rank([a, b, c], Target("speedup", 1.1), labelled=False) == [a, b, c]  # by cosine
    assert rank([a, b, c], Target("min-cosine", 0.9), labelled=False) == [b, c, a]  # by speed
    assert pareto_front([a, b, c]) == [b, a]  # c is slower and less faithful than b
    assert b.meets(Target("speedup", 1.6), None) and not c.meets(Target("speedup", 1.52), None)
    assert c.meets(Target("speedup", 1.52), None, speed_margin=0.97)  # predicted: worth timing


def test_coarse_to_fine_spreads_every_prefix():
    order = _coarse_to_fine(9)
    assert sorted(order) == list(range(9)) and order[:3] == [0, 8, 4]
    assert _coarse_to_fine(1) == [0] and _coarse_to_fine(0) == []


def test_cache_resumes_only_in_its_own_context(tmp_path):
    path = tmp_path / "cache.json"
    with pytest.raises(ConfigError, match="no tuning cache"):
        TuneCache(path, {"batch": 1}, resume=True)
    cache = TuneCache(path, {"batch": 1}, resume=False)
    cache.fidelity["k"] = {"cosine": 0.5, "agreement": None, "top1_drop": None}
    cache.save()
    assert TuneCache(path, {"batch": 1}, resume=True).fidelity == cache.fidelity
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ConfigError, match=r"other settings \(batch\)"):
        TuneCache(path, {"batch": 8}, resume=True)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a tuning cache"):
        TuneCache(path, {"batch": 1}, resume=True)
    assert json.loads(json.dumps(cache.context)) == {"batch": 1}


def test_unreadable_photos_are_skipped_and_none_usable_is_one_error(tmp_path):
    from tests.measure.test_accuracy import make_folder
    from tofu_edge.errors import TofuError
    from tofu_edge.tune.images import tuning_images

    folder = make_folder(tmp_path, classes=("photos",), per_class=2) / "photos"
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    model = create_model("deit_tiny_patch16_224", img_size=32)
    images, labels, unreadable = tuning_images(model, folder, limit=10)
    assert images.shape == (2, 3, 32, 32) and labels is None and unreadable == 1
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_text("text, not an image")
    with pytest.raises(TofuError, match="holds no image that can be read"):
        tuning_images(model, tmp_path / "junk", limit=10)
