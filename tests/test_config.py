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
