"""`FusionConfig`: the frozen, user-facing description of how a model is fused."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from tofu_edge.choices import _Choice, parse_choice
from tofu_edge.errors import ConfigError

__all__ = ["Mode", "StepOp", "Selection", "FusionConfig", "DEFAULT_MODE", "DEFAULT_TOFU_SWITCH"]


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

    r: int | tuple[int, ...] = 0
    mode: Mode = Mode.MLERP
    switch: int | None = None
    prop_attn: bool = True
    inflection: float = 0.0
    keep: float | None = None
    clamp: bool = False
    ops: tuple[StepOp, ...] | None = None
    align: int | None = None
    selection: Selection = Selection.BIPARTITE

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
        """The config as plain JSON types."""
        return {
            "r": list(self.r) if isinstance(self.r, tuple) else self.r,
            "mode": self.mode.value,
            "switch": self.switch,
            "prop_attn": self.prop_attn,
            "inflection": self.inflection,
            "keep": self.keep,
            "clamp": self.clamp,
            "ops": None if self.ops is None else [op.value for op in self.ops],
            "align": self.align,
            "selection": self.selection.value,
        }

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
        values = dict(data)
        if isinstance(values.get("r"), list):
            values["r"] = tuple(values["r"])
        return cls(**values)


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
