"""The schedules `tofu-edge tune` considers: token schedules (uniform ``r``, ToMe's decreasing ``inflection``,
``keep`` targets, ``align``-ed variants) and, for the promising ones, other step operations (mean, ``tofu``
switches, the per-block operations ``calibrate`` picks)."""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass

from tofu_edge.arch import ViTArch
from tofu_edge.config import FusionConfig, Mode, StepOp
from tofu_edge.errors import ScheduleError
from tofu_edge.measure.variants import variant_name
from tofu_edge.plan import FusionPlan, resolve_plan

__all__ = [
    "Candidate",
    "token_schedules",
    "op_variants",
    "with_ops",
    "unfused_candidate",
    "INFLECTIONS",
    "KEEPS",
    "ALIGN",
]

INFLECTIONS = (-0.5, -1.0)  # ToMe's decreasing schedules: more tokens removed early
KEEPS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
ALIGN = 8  # tokens leaving each step a multiple of 8: GEMM-friendly shapes


@dataclass(frozen=True)
class Candidate:
    """One schedule to score: a fusion (``None``: the unfused model) and whether it is quantized to INT8.

    Attributes:
        name: Unique, readable name (``mlerp r=13``, ``tofu r=13 switch=1``, ``mlerp keep=0.6 +int8``).
        config: The fusion.
        int8: Linear layers quantized (onnxruntime on CPUs).
        macs_ratio: MACs per image against the unfused model's.
        steps: Blocks that run a fusion step (``r > 0``).
        r_schedule: Tokens removed per block.
    """

    name: str
    config: FusionConfig | None
    int8: bool
    macs_ratio: float
    steps: int
    r_schedule: tuple[int, ...]

    @functools.cached_property
    def key(self) -> str:
        """What identifies the candidate in a cache: its config and precision."""
        config = None if self.config is None else self.config.to_dict()
        return json.dumps({"config": config, "int8": self.int8}, sort_keys=True)

    def quantized(self) -> Candidate:
        """This schedule with INT8 Linear layers."""
        return dataclasses.replace(self, name=f"{self.name} +int8", int8=True)


def _candidate(config: FusionConfig | None, arch: ViTArch) -> Candidate:
    plan: FusionPlan = resolve_plan(config or FusionConfig(), arch)
    return Candidate(
        name=variant_name(config),
        config=config,
        int8=False,
        macs_ratio=plan.macs / plan.unfused_macs,
        steps=sum(1 for r in plan.r_schedule if r > 0),
        r_schedule=tuple(plan.r_schedule),
    )


def unfused_candidate(arch: ViTArch) -> Candidate:
    """The unfused model as a candidate (r = 0)."""
    return _candidate(None, arch)


def token_schedules(arch: ViTArch, base: FusionConfig | None = None) -> list[Candidate]:
    """Every distinct token schedule tune considers on ``arch``, with ``base``'s step operations (default MLERP).

    Uniform ``r`` from 1 to the most the model allows, the decreasing schedules of `INFLECTIONS` at every other
    ``r``, the MACs targets `KEEPS`, and every other uniform ``r`` with ``align`` = `ALIGN`. Schedules that cannot
    run on the model are left out; two with the same per-block ``r`` count once.

    Returns:
        Candidates, fewest MACs removed first.
    """
    base = base or FusionConfig()
    configs = []
    for r in range(1, arch.num_tokens):
        config = dataclasses.replace(base, r=r)
        try:
            resolve_plan(config, arch)
        except ScheduleError:
            break  # a larger r cannot run either
        configs.append(config)
        if r % 2 == 0:
            configs += [dataclasses.replace(config, inflection=i) for i in INFLECTIONS]
            configs.append(dataclasses.replace(config, align=ALIGN))
    configs += [dataclasses.replace(base, keep=keep) for keep in KEEPS]
    found: dict[tuple[int, ...], Candidate] = {}
    for config in configs:
        try:
            candidate = _candidate(config, arch)
        except ScheduleError:
            continue
        if candidate.steps and candidate.r_schedule not in found:
            found[candidate.r_schedule] = candidate
    return sorted(found.values(), key=lambda c: -c.macs_ratio)


def op_variants(candidate: Candidate, arch: ViTArch, switches: tuple[int, ...] = (1, 2)) -> list[Candidate]:
    """The same token schedule with other step operations: ToMe's ``mean`` everywhere and ``tofu`` (prune below
    the switch block, MLERP from it) at each of ``switches``.

    Raises:
        ConfigError: the candidate is unfused.
    """
    schedule = candidate.config.token_schedule()
    configs = [dataclasses.replace(schedule, mode=Mode.MEAN)]
    configs += [dataclasses.replace(schedule, mode=Mode.TOFU, switch=s) for s in switches if s < arch.num_blocks]
    return [_with_config(candidate, config) for config in configs]


def with_ops(candidate: Candidate, ops: tuple[StepOp, ...]) -> Candidate:
    """The candidate's token schedule with one step operation per block (what ``calibrate --per-block`` picks)."""
    schedule = dataclasses.replace(candidate.config.token_schedule(), ops=tuple(ops))
    return _with_config(candidate, schedule)


def _with_config(candidate: Candidate, config: FusionConfig) -> Candidate:
    return dataclasses.replace(candidate, name=variant_name(config), config=config)
