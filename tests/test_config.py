import pytest

from tofu_edge import ConfigError, FusionConfig, Mode


def test_mode_strings_become_modes():
    assert FusionConfig(mode="mean").mode is Mode.MEAN


def test_lists_become_tuples():
    assert FusionConfig(r=[4, 3]).r == (4, 3)


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        FusionConfig().r = 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="fast"), "unknown mode 'fast'; choose one of tofu, mlerp, mean, prune"),
        (dict(r=-1), "r values must be >= 0"),
        (dict(r=[2, 1.5]), "r values must be ints"),
        (dict(r="13"), "r must be an int or a sequence"),
        (dict(switch=-2), "switch must be >= 0"),
        (dict(keep=1.5), "keep must be a fraction"),
        (dict(keep=0.5, r=3), "either keep"),
        (dict(r=[3, 3], inflection=0.5), "inflection shapes a constant r"),
        (dict(inflection=2.0), "inflection must be in"),
    ],
)
def test_bad_options_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FusionConfig(**kwargs)


def test_to_dict_is_plain_json():
    assert FusionConfig(r=(2, 1), mode="mlerp").to_dict()["r"] == [2, 1]
    assert FusionConfig(mode="mlerp").to_dict()["mode"] == "mlerp"


def test_ops_give_every_block_its_operation_and_imply_mode_per_block():
    config = FusionConfig(r=2, ops=["prune", "mean", "mlerp"])
    assert config.mode is Mode.PER_BLOCK and [op.value for op in config.ops] == ["prune", "mean", "mlerp"]
    assert FusionConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ops=["prune", "average"]), "unknown step operation 'average'"),
        (dict(ops=["prune"], mode="tofu"), "give either ops"),
        (dict(ops=["prune"], switch=1), "cannot go with ops"),
        (dict(mode="per-block"), "mode=per-block needs ops"),
        (dict(ops="prune"), "ops must be a list"),
    ],
)
def test_bad_ops_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FusionConfig(**kwargs)


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ConfigError, match=r"unknown fusion config keys \['ratio'\]"):
        FusionConfig.from_dict({"r": 2, "ratio": 0.5})


def test_token_schedule_keeps_the_schedule_and_drops_the_operations():
    config = FusionConfig(r=(4, 3), ops=("prune", "mlerp"), clamp=True, align=8, selection="energy")
    assert config.token_schedule() == FusionConfig(r=(4, 3), clamp=True, align=8, selection="energy")
    assert FusionConfig(r=13, mode="tofu", switch=2).token_schedule() == FusionConfig(r=13)


def test_every_field_round_trips_through_to_dict_and_carries_its_text_form():
    from dataclasses import fields

    from tofu_edge.config import FieldText, config_fields

    config = FusionConfig(r=(4, 3), ops=("prune", "mean"), inflection=0.0, clamp=True, align=8, selection="energy")
    assert list(config.to_dict()) == [field.name for field in fields(FusionConfig)]
    assert FusionConfig.from_dict(config.to_dict()) == config
    assert all(isinstance(text, FieldText) and text.help for _, text in config_fields())


def test_closed_choices_share_one_base():
    from tofu_edge.choices import _Choice
    from tofu_edge.config import Selection, StepOp

    assert all(issubclass(kind, _Choice) for kind in (Mode, StepOp, Selection))
    assert str(Mode.PER_BLOCK) == "per-block" and Mode.TOFU == "tofu"
