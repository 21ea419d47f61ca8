"""What `benchmarks.real_weights_study` compares and how it scores them: the per-block operation lists of the fixed
modes and switches, the candidate default rules (and their selection on calibration photos only), paired statistics,
the Fashion-MNIST linear probe as a reusable classifier, and a data-dependent prototype step.

Candidate default rules (each maps a resolved plan to one operation per block; ``rate`` is the first block's ``r``
over the patch tokens, ``L`` the number of blocks):

- ``fixed switch s``: prune below block ``s``, MLERP from it, whatever the schedule (s = 0 is MLERP everywhere).
- ``by rate``: the best of ``mean`` and switches 0..4 at each tuned schedule (r = 8, 13, 16), used for every plan
  whose rate is nearest that schedule's (thresholds halfway between the tuned rates).
- ``prune ~ rate``: ``k = round(a * rate * L)`` prune blocks, then MLERP: more pruning the more a plan removes.
- ``prune budget``: prune while the tokens removed so far stay within a fraction ``phi`` of the patch tokens
  (``k = floor(phi / rate)``), then MLERP: fewer prune blocks the more a plan removes per block.

Each rule's parameter is chosen to maximise the smallest gain in mean output cosine over ``mean`` across r = 8, 13
and 16 at 224 px, on the calibration photos only; the held-out photos, the probe, ``keep`` schedules and the other
resolution confirm or refute.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tofu_edge.calibrate import switch_ops, uniform_ops
from tofu_edge.config import StepOp
from tofu_edge.ops.match import cosine_scores, match_tokens, split_starts
from tofu_edge.ops.merge import fuse_tokens
from tofu_edge.patch.block import FusedBlock
from tofu_edge.plan import FusionPlan

__all__ = [
    "Variant",
    "Rule",
    "base_variants",
    "ops_text",
    "rate",
    "rule_families",
    "select_rule",
    "paired_cosine",
    "fit_probe",
    "GatedBlock",
    "GATES",
]

Ops = tuple[StepOp, ...]
SWITCH_CANDIDATES = range(5)  # fixed switches considered as defaults: pruning 5+ blocks loses clearly (toy and real)
PRUNE_MEAN_SWITCHES = (1, 2, 3)  # prune below s, ToMe's mean from s: does early pruning help mean as it helps MLERP?
RATE_FACTORS = (0, 1, 2, 3, 4, 6, 8)  # `prune ~ rate`: a
PRUNE_BUDGETS = (0.0, 0.03, 0.06, 0.1, 0.15, 0.2)  # `prune budget`: phi


@dataclass(frozen=True)
class Variant:
    """One fused model of the study: a name, its family and one step operation per block."""

    name: str
    family: str
    ops: Ops


def ops_text(ops: Sequence[StepOp]) -> str:
    """``P`` prune, ``M`` mean, ``L`` MLERP, one letter per block (``PPLLLLLLLLLL``)."""
    return "".join({StepOp.PRUNE: "P", StepOp.MEAN: "M", StepOp.MLERP: "L"}[op] for op in ops)


def base_variants(num_blocks: int) -> list[Variant]:
    """``mean``, every ``tofu`` switch 0..L (0 = ``mlerp``, L = ``prune``) and a few prune-then-mean lists."""
    variants = [Variant("mean", "mean", uniform_ops(StepOp.MEAN, num_blocks))]
    for switch in range(num_blocks + 1):
        name = {0: "switch 0 (= mlerp)", num_blocks: f"switch {num_blocks} (= prune)"}.get(switch, f"switch {switch}")
        variants.append(Variant(name, "switch", switch_ops(switch, num_blocks)))
    for switch in PRUNE_MEAN_SWITCHES:
        ops = (StepOp.PRUNE,) * switch + (StepOp.MEAN,) * (num_blocks - switch)
        variants.append(Variant(f"prune-mean {switch}", "prune-mean", ops))
    return variants


def rate(plan: FusionPlan) -> float:
    """The first block's ``r`` over the patch tokens: how hard the schedule fuses, independent of resolution."""
    first = plan.blocks[0]
    return first.r / (first.tokens_in - first.num_prefix)


@dataclass(frozen=True)
class Rule:
    """A candidate default: a name, a parameter and how it turns a plan into per-block operations."""

    family: str
    parameter: str
    choose: Callable[[FusionPlan], Ops]

    @property
    def name(self) -> str:
        return f"{self.family} {self.parameter}"

    def ops(self, plan: FusionPlan) -> Ops:
        return self.choose(plan)


def _prune_first(k: int, num_blocks: int) -> Ops:
    return switch_ops(max(0, min(k, num_blocks)), num_blocks)


def rule_families(tuned: dict[str, tuple[float, str]] | None = None) -> dict[str, list[Rule]]:
    """Every candidate of every family, by family. ``tuned`` (schedule -> (rate, best of mean and switches 0..4 on
    the calibration photos)) defines the one ``by rate`` rule; without it that family is empty."""
    families: dict[str, list[Rule]] = {
        "fixed switch": [Rule("fixed switch", str(s), _fixed(s)) for s in SWITCH_CANDIDATES],
        "prune ~ rate": [Rule("prune ~ rate", f"a={a}", _by_rate_factor(a)) for a in RATE_FACTORS],
        "prune budget": [Rule("prune budget", f"phi={phi}", _by_budget(phi)) for phi in PRUNE_BUDGETS],
        "by rate": [],
    }
    if tuned:
        table = sorted(tuned.values())
        text = ", ".join(f"rate {value:.3f}: {best}" for value, best in table)
        families["by rate"] = [Rule("by rate", f"({text})", _nearest_rate(table))]
    return families


def _fixed(switch: int) -> Callable[[FusionPlan], Ops]:
    return lambda plan: _prune_first(switch, len(plan.blocks))


def _by_rate_factor(factor: float) -> Callable[[FusionPlan], Ops]:
    return lambda plan: _prune_first(round(factor * rate(plan) * len(plan.blocks)), len(plan.blocks))


def _by_budget(budget: float) -> Callable[[FusionPlan], Ops]:
    def choose(plan: FusionPlan) -> Ops:
        removed, patches, k = 0, plan.blocks[0].tokens_in - plan.blocks[0].num_prefix, 0
        for block in plan.blocks:
            removed += block.r
            if removed > budget * patches + 1e-9:
                break
            k += 1
        return _prune_first(k, len(plan.blocks))

    return choose


def _nearest_rate(table: list[tuple[float, str]]) -> Callable[[FusionPlan], Ops]:
    def choose(plan: FusionPlan) -> Ops:
        best = min(table, key=lambda row: abs(math.log(row[0]) - math.log(max(rate(plan), 1e-9))))[1]
        num_blocks = len(plan.blocks)
        return uniform_ops(StepOp.MEAN, num_blocks) if best == "mean" else switch_ops(int(best.split()[1]), num_blocks)

    return choose


def select_rule(rules: Sequence[Rule], gains: Callable[[Rule], list[float]]) -> Rule:
    """The rule whose smallest gain (over the tuned schedules) is largest; ties go to the rule listed first."""
    return max(rules, key=lambda rule: min(gains(rule)))


def paired_cosine(cosines: torch.Tensor, reference: torch.Tensor) -> dict:
    """Mean per-image difference of two variants' cosines on the same images, with its standard error.

    Shapes:
        cosines, reference: [N]
    """
    diff = (cosines - reference).double()
    se = float(diff.std(unbiased=True) / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return {"diff": float(diff.mean()), "se": se}


def fit_probe(features: torch.Tensor, labels: torch.Tensor, *, seed: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """The linear probe of `benchmarks.fashion_mnist` (standardised features, softmax layer from zeros, L2, LBFGS with
    its constants), fitted once and returned as a classifier of new features, so fused features can be scored with
    the probe of the unfused ones.

    Shapes:
        features: [N, D], labels: [N] int64
        returns: a function [M, D] -> predicted classes [M] int64
    """
    from benchmarks.fashion_mnist import L2, LBFGS_STEPS, NUM_CLASSES

    torch.manual_seed(seed)
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    inputs = ((features - mean) / std).double()
    layer = torch.nn.Linear(features.shape[1], NUM_CLASSES).double()
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=LBFGS_STEPS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(inputs), labels) + L2 * layer.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)

    def classify(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return layer(((x - mean) / std).double()).argmax(1)

    return classify


# --- (iv) a data-dependent step, prototyped here (not in tofu_edge.ops) ------------------------------------------

GATES = {
    "prune similar pairs (>= 0.99), merge the rest": ("prune_similar", 0.99),
    "merge similar pairs (>= 0.95), prune the rest": ("prune_dissimilar", 0.95),
    "block 0 keeps the destination's features but sums sizes": ("keep_mass_first", 0.0),
}


class GatedBlock(FusedBlock):
    """A fused block whose merge step decides per source, from its match score, whether it merges or is pruned.

    Static shapes: the same ``r`` sources leave; a pruned source is merged with weight zero (its size and its row
    are multiplied by a 0/1 gate before the block's mean or MLERP), so an exported step needs one comparison and
    one multiply more (the gate reaches the tokens through the assignment matmul; this prototype uses a scatter).
    ``keep_mass_first`` merges nothing in block 0 (the destination keeps its features) but adds the sources' sizes.
    """

    gate: tuple[str, float] | None = None

    def fusion_step(self, x, size, metric):
        step = self.tofu_step
        if step.r == 0 or self.gate is None:
            return super().fusion_step(x, size, metric)
        kind, threshold = self.gate
        match = match_tokens(metric, step.num_prefix, step.r)
        size = torch.ones_like(x[..., :1]) if size is None else size
        if kind == "keep_mass_first":
            return fuse_tokens(x, None, match, StepOp.PRUNE)[0], fuse_tokens(x, size, match, StepOp.MEAN)[1], match
        best = cosine_scores(metric, step.num_prefix).amax(dim=-1)  # [B, |A|]
        source_score = best.gather(1, (match.src - split_starts(step.num_prefix)[0]) // 2)  # [B, r]
        merge = source_score < threshold if kind == "prune_similar" else source_score >= threshold
        gate = torch.ones_like(size).scatter(1, match.src[..., None], merge.to(x.dtype)[..., None])
        x, size = fuse_tokens(x * gate, size * gate, match, step.op)
        return x, size, match
