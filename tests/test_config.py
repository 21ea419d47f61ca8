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
