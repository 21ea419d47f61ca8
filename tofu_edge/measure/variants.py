"""What a measurement compares: named variants of one model, a ``--sweep`` parsed into them, and their names.

`bench` and `eval` both go through here, so ``--sweep r=0,8,13`` means the same to both and a variant is named
the same way everywhere (``mlerp r=13``, ``tofu keep=0.6``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tofu_edge.config import FusionConfig, config_fields, value_text
from tofu_edge.errors import ConfigError

__all__ = ["Variant", "parse_sweep", "variant_name", "UNFUSED"]

UNFUSED = "unfused"


@dataclass(frozen=True)
class Variant:
    """One model variant: a name and its fusion (``None``: the plain, unfused timm model)."""

    name: str
    config: FusionConfig | None = None


def variant_name(config: FusionConfig | None) -> str:
    """``mlerp r=13``, ``tofu r=16,16,8 switch=2``, ``mean keep=0.6 align=8``; ``unfused`` for ``None``.

    The mode and the schedule (``r`` or ``keep``), then every other field that is not at its default and whose
    declaration says it is named (`tofu_edge.config.FieldText`): ``switch=2``, ``no-prop-attn``, ``selection=energy``.
    """
    if config is None:
        return UNFUSED
    schedule = f"keep={config.keep:g}" if config.keep is not None else f"r={value_text(config.r)}"
    parts = [config.mode.value, schedule]
    for field, text in config_fields():
        value = getattr(config, field.name)
        if field.name in ("r", "keep", "mode") or not text.named or value == field.default:
            continue
        parts.append(_name_part(field.name.replace("_", "-"), value))
    return " ".join(parts)


def _name_part(name: str, value: object) -> str:
    if isinstance(value, bool):
        return name if value else f"no-{name}"
    return f"{name}={value:g}" if isinstance(value, float) else f"{name}={value_text(value)}"


def parse_sweep(text: str, base: FusionConfig) -> list[Variant]:
    """``"r=0,8,13"`` or ``"keep=0.8,0.6"`` into variants built on ``base`` (mode, switch, clamp, ...).

    ``r=0`` and ``keep=1`` are the unfused model, which is put first whether listed or not; repeated values
    count once, in the order given.

    Raises:
        ConfigError: not ``r=`` or ``keep=`` followed by a comma list of numbers.
    """
    key, sep, values = text.partition("=")
    key = key.strip()
    try:
        numbers = [int(v) if key == "r" else float(v) for v in values.split(",")] if sep else []
    except ValueError:
        numbers = []
    if key not in ("r", "keep") or not numbers:
        raise ConfigError(f"--sweep takes r=INT,INT,... or keep=FRACTION,FRACTION,..., got {text!r}")
    if key == "keep" and base.inflection:
        raise ConfigError("--sweep keep=... sets MACs targets; --inflection shapes a constant r: leave it out")
    variants = [Variant(UNFUSED)]
    for number in dict.fromkeys(numbers):
        if (key == "r" and number == 0) or (key == "keep" and number == 1.0):
            continue  # the unfused model, already first
        if key == "r":
            config = dataclasses.replace(base, r=number, keep=None)
        else:
            config = dataclasses.replace(base, r=0, keep=number, inflection=0.0)
        variants.append(Variant(variant_name(config), config))
    return variants
