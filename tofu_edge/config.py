"""`FusionConfig`: the frozen, user-facing description of how a model is fused."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tofu_edge.choices import _Choice, parse_choice
from tofu_edge.errors import ConfigError

__all__ = [
    "Mode",
    "StepOp",
    "Selection",
    "FusionConfig",
    "FieldText",
    "config_fields",
    "value_text",
    "DEFAULT_MODE",
    "DEFAULT_TOFU_SWITCH",
]


class StepOp(_Choice):
    """What one fusion step does with the ``r`` sources it removes.

    ``prune`` drops them and leaves their partners as they are; ``mean`` folds them into their partners as a
    size-weighted average (ToMe); ``mlerp`` takes that average's direction and the largest norm in the group.
    """

    PRUNE = "prune"
    MEAN = "mean"
    MLERP = "mlerp"


class Mode(_Choice):
    """The schedule of step operations over a model's blocks.

    ``mlerp``, ``mean`` and ``prune`` use that `StepOp` in every block; ``tofu`` prunes below the switch block and
    merges with MLERP from it on; ``per-block`` takes each block's operation from `FusionConfig.ops` (what
    ``tofu-edge calibrate --per-block`` chooses).
    """

    TOFU = "tofu"
    MLERP = "mlerp"
    MEAN = "mean"
    PRUNE = "prune"
    PER_BLOCK = "per-block"


class Selection(_Choice):
    """Which A tokens may become sources of a fusion step (the bipartite matching itself is the same in all).

    ``bipartite`` (ToMe): every A token may; the ``r`` with the best match go. ``energy``: the A tokens least
    similar to the B set (lowest energy: isolated, informative) are protected and never removed. ``attention``:
    the A tokens the class token attends to most are protected. A protected token stays as it is
    (`tofu_edge.ops.select`).
    """

    BIPARTITE = "bipartite"
    ENERGY = "energy"
    ATTENTION = "attention"


# Defaults follow our studies (benchmarks/README.md, README "Defaults, and why"): on a pretrained DINOv2 ViT-S/14
# MLERP in every block beat ToMe's mean in output cosine at every rate, schedule and resolution tried, and the toy
# Fashion-MNIST ViT agrees; the public L // 2 switch lost on both. Where `tofu` is asked for without a switch, only
# block 0 prunes: one prune block is the best and safest `tofu` schedule on DINOv2 at high rates.
DEFAULT_TOFU_SWITCH = 1


@dataclass(frozen=True)
class FieldText:
    """How one `FusionConfig` field reads and writes as text, declared with the field.

    The field is the command-line option ``--<name>`` (``_`` as ``-``; a bool as ``--<name>/--no-<name>``) in every
    command that fuses, the flag ``calibrate`` and ``tune`` print for it, and, where its value is not the default,
    a part of a variant's name (``mlerp r=13 align=8``).

    Args:
        help: The option's help text.
        parse: Text to value, for a field whose option takes text (``--r 16,16,8``); ``None``: typer parses the
            option by the field's own type.
        short: A one-letter alias (``-r``).
        named: Whether a value other than the default is part of a variant's name.
    """

    help: str
    parse: Callable[[str], Any] | None = None
    short: str | None = None
    named: bool = True


def _field(default: Any, help: str, **text: Any) -> Any:
    return dataclasses.field(default=default, metadata={"text": FieldText(help, **text)})


def _r_from_text(text: str) -> int | tuple[int, ...]:
    """``"13"`` -> 13, ``"16,16,8"`` -> (16, 16, 8): ``--r`` as given.

    Raises:
        ConfigError: not an int or a comma list of ints.
    """
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--r takes an int or a comma list of ints, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _ops_from_text(text: str) -> tuple[str, ...]:
    """``"prune,mlerp"`` -> ("prune", "mlerp"): ``--ops`` as given (`FusionConfig` checks each operation)."""
    return tuple(op.strip() for op in text.split(","))


@dataclass(frozen=True)
class FusionConfig:
    """What to fuse: a token schedule, a merge mode and attention options.

    Give either ``r`` (a constant, with an optional ToMe ``inflection``, or an explicit per-block list) or
    ``keep`` (a target fraction of the unfused model's MACs, solved into per-block ``r`` at fuse time).

    Args:
        r: Tokens removed per block: an int for every block, or a sequence with one entry per block
            (shorter sequences are padded with zeros, as ToMe does).
        mode: ``tofu``, ``mlerp``, ``mean`` (ToMe) or ``prune``.
        switch: First block that merges with MLERP in ``tofu`` mode (blocks below it prune). ``None``
            means ``DEFAULT_TOFU_SWITCH`` (1: only block 0 prunes); ``tofu-edge calibrate`` picks one per model.
        prop_attn: Add ``log(size)`` to the attention logits (proportional attention).
        inflection: ToMe's schedule shape for an int ``r``: 0 constant, negative decreasing, positive
            increasing; in [-1, 1].
        keep: Target fraction of the unfused MACs in (0, 1]; the plan removes as many tokens as needed
            to get at or just below it.
        clamp: Cap each block's ``r`` at what it can remove (ToMe's behaviour), instead of raising. The
            plan then shows the capped values.
        ops: Each block's step operation (``prune``, ``mean`` or ``mlerp``), one per block; implies
            ``mode="per-block"``.
        align: Shape the schedule so that the tokens leaving every fusion step are a multiple of ``align``
            (e.g. 8: friendlier GEMM sizes, tensor cores on GPUs), at the same total MACs within 1 %.
        selection: Which tokens may be removed: ``bipartite`` (ToMe's choice), ``energy`` or ``attention``
            (`Selection`: each protects some tokens from removal).

    Raises:
        ConfigError: a malformed or conflicting option.
    """

    # Each field carries its text form (`FieldText`): the CLI's --option, calibrate's printed flags and the variant
    # names are made from these declarations, so a new field reaches them all from here.
    r: int | tuple[int, ...] = _field(
        0,
        "Tokens removed per block: one int for every block, or a comma list per block.",
        parse=_r_from_text,
        short="-r",
    )
    mode: Mode = _field(
        Mode.MLERP, "mlerp (default), mean (ToMe) or prune in every block; tofu = prune below --switch, MLERP from it."
    )
    switch: int | None = _field(None, "First MLERP block in tofu mode (default 1; see calibrate).")
    prop_attn: bool = _field(True, "Proportional attention: add log(size) to the logits.")
    inflection: float = _field(0.0, "ToMe's schedule shape for a constant r: <0 decreasing.")
    keep: float | None = _field(None, "Target fraction of the unfused MACs, solved into per-block r (instead of --r).")
    clamp: bool = _field(False, "Cap r at what each block can remove instead of failing.", named=False)
    ops: tuple[StepOp, ...] | None = _field(
        None,
        "One step operation per block, e.g. prune,prune,mlerp,...: mode per-block (see calibrate).",
        parse=_ops_from_text,
        named=False,  # the name says per-block
    )
    align: int | None = _field(
        None, "Shape r so every block leaves a multiple of this many tokens (e.g. 8), same MACs within 1 %."
    )
    selection: Selection = _field(
        Selection.BIPARTITE,
        "Which tokens may be removed: bipartite (ToMe), energy (isolated tokens protected) or attention (tokens the "
        "class token attends to most protected).",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", parse_choice(Mode, self.mode, "mode"))
        object.__setattr__(self, "selection", parse_choice(Selection, self.selection, "selection"))
        if self.ops is not None:
            if isinstance(self.ops, (str, bytes)) or not isinstance(self.ops, Sequence) or not self.ops:
                raise ConfigError(f"ops must be a list of step operations, one per block, got {self.ops!r}")
            object.__setattr__(self, "ops", tuple(parse_choice(StepOp, op, "step operation") for op in self.ops))
            if self.mode not in (Mode.MLERP, Mode.PER_BLOCK):  # MLERP: the default, i.e. not given
                raise ConfigError(f"give either ops (one operation per block) or mode={self.mode.value}, not both")
            if self.switch is not None:
                raise ConfigError("switch places the prune/MLERP boundary of mode=tofu; it cannot go with ops")
            object.__setattr__(self, "mode", Mode.PER_BLOCK)
        elif self.mode is Mode.PER_BLOCK:
            raise ConfigError("mode=per-block needs ops: one step operation per block (prune, mean or mlerp)")
        object.__setattr__(self, "r", _parse_r(self.r))
        if self.switch is not None and (isinstance(self.switch, bool) or not isinstance(self.switch, int)):
            raise ConfigError(f"switch must be a block index (int), got {self.switch!r}")
        if self.switch is not None and self.switch < 0:
            raise ConfigError(f"switch must be >= 0, got {self.switch}")
        if not -1.0 <= float(self.inflection) <= 1.0:
            raise ConfigError(f"inflection must be in [-1, 1], got {self.inflection}")
        if self.inflection and not isinstance(self.r, int):
            raise ConfigError("inflection shapes a constant r; it cannot be combined with a per-block r list")
        if self.align is not None and (
            isinstance(self.align, bool) or not isinstance(self.align, int) or self.align < 1
        ):
            raise ConfigError(f"align must be a token count >= 1 (e.g. 8), got {self.align!r}")
        if self.keep is not None:
            if not 0.0 < float(self.keep) <= 1.0:
                raise ConfigError(f"keep must be a fraction of the MACs in (0, 1], got {self.keep}")
            if self.r != 0 or self.inflection:
                raise ConfigError("give either keep (a MACs target) or r (a token schedule), not both")

    def token_schedule(self) -> FusionConfig:
        """This config's token schedule alone: the same ``r`` or ``keep`` (and ``inflection``, ``clamp``, ``align``,
        ``prop_attn``, ``selection``) with the default operations, ``mlerp`` in every block; what ``calibrate`` and
        ``tune`` choose the operations (mode, switch, per-block ops) for."""
        return dataclasses.replace(self, mode=DEFAULT_MODE, switch=None, ops=None)

    def to_dict(self) -> dict:
        """The config as plain JSON types (choices by value, sequences as lists), one entry per field."""
        return {field.name: _plain(getattr(self, field.name)) for field in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> FusionConfig:
        """The config `to_dict` wrote (a ``--config`` file, ONNX metadata); unknown keys are an error.

        Raises:
            ConfigError: not a dict of known fields, or values `FusionConfig` refuses.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"a fusion config is a JSON object of {', '.join(cls.__dataclass_fields__)}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown fusion config keys {unknown}; known: {', '.join(cls.__dataclass_fields__)}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


def config_fields() -> tuple[tuple[dataclasses.Field, FieldText], ...]:
    """Every `FusionConfig` field, in declaration order, with its text form."""
    return tuple((field, field.metadata["text"]) for field in dataclasses.fields(FusionConfig))


def value_text(value: Any) -> str:
    """A field value as its option takes it: a choice by its value, a sequence as a comma list (``16,16,8``)."""
    if isinstance(value, (tuple, list)):
        return ",".join(value_text(item) for item in value)
    return value.value if isinstance(value, Enum) else str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    return value.value if isinstance(value, Enum) else value


def _parse_r(r: int | Sequence[int]) -> int | tuple[int, ...]:
    values = [r] if isinstance(r, int) else r
    if isinstance(r, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(f"r must be an int or a sequence of ints, got {r!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"r values must be ints, got {value!r}")
        if value < 0:
            raise ConfigError(f"r values must be >= 0, got {value}")
    return r if isinstance(r, int) else tuple(values)


DEFAULT_MODE = Mode.MLERP
