"""`calibrate_ops`: choose every block's step operation (prune, mean or MLERP) end to end on real images.

The search starts from the best uniform schedule (every ``tofu`` switch from 0 to L, and ``mean`` everywhere) and
then runs coordinate descent: block by block, it tries the other operations there with every other block fixed,
and keeps a change when the mean output cosine to the unfused model rises by more than ``min_gain``. A pass that
changes nothing ends it. Every score is an end-to-end forward pass, so the result can only be as good as or better
than its start on the calibration images; whether it is better on other images is an empirical question
(``benchmarks/real_weights_study.py`` measures it on held-out photos). `OpsRunner` shares the unchanged leading
blocks between passes, so a change at block ``l`` costs blocks ``l..L-1`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from tofu_edge.calibrate.runner import OpsRunner, output_cosines, switch_ops, uniform_ops
from tofu_edge.choices import parse_choice
from tofu_edge.config import FusionConfig, StepOp
from tofu_edge.errors import ConfigError

__all__ = ["OpsCalibration", "OpsChange", "calibrate_ops", "DEFAULT_PASSES", "DEFAULT_MIN_GAIN"]

DEFAULT_PASSES = 2
DEFAULT_MIN_GAIN = 1e-5  # mean cosine: smaller gains on a handful of images are noise, not a better schedule
Progress = Callable[[int, int], None]  # (evaluations done, at most this many)


@dataclass(frozen=True)
class OpsChange:
    """One accepted change of the search: ``block`` now runs ``op``, and the score rose to ``score``."""

    sweep: int
    block: int
    op: StepOp
    score: float


@dataclass(frozen=True)
class OpsCalibration:
    """The per-block operations the search chose, and how it got there.

    Attributes:
        ops: One step operation per block.
        score: Mean output cosine to the unfused model on the calibration images, with ``ops``.
        start: Name of the uniform schedule the search started from (``switch 2``, ``mean``).
        start_ops: Its operations.
        start_scores: Score of every uniform schedule tried as a start, by name.
        changes: The accepted changes, in order.
        sweeps: Coordinate-descent passes run.
        evaluations: End-to-end scores computed.
        images: Calibration images.
        config: The schedule with ``ops`` (mode ``per-block``), what ``export`` takes.
    """

    ops: tuple[StepOp, ...]
    score: float
    start: str
    start_ops: tuple[StepOp, ...]
    start_scores: dict[str, float]
    changes: tuple[OpsChange, ...]
    sweeps: int
    evaluations: int
    images: int
    config: FusionConfig

    @property
    def start_score(self) -> float:
        """Score of the starting schedule."""
        return self.start_scores[self.start]

    def to_dict(self) -> dict:
        """The result as plain JSON types."""
        return {
            "method": "per-block",
            "ops": [op.value for op in self.ops],
            "score": self.score,
            "start": self.start,
            "start_ops": [op.value for op in self.start_ops],
            "start_score": self.start_score,
            "start_scores": dict(self.start_scores),
            "changes": [{"sweep": c.sweep, "block": c.block, "op": c.op.value, "score": c.score} for c in self.changes],
            "sweeps": self.sweeps,
            "evaluations": self.evaluations,
            "images": self.images,
        }


def calibrate_ops(
    model: torch.nn.Module,
    images: torch.Tensor,
    config: FusionConfig,
    *,
    choices: Sequence[StepOp | str] = tuple(StepOp),
    passes: int = DEFAULT_PASSES,
    min_gain: float = DEFAULT_MIN_GAIN,
    progress: Progress | None = None,
) -> OpsCalibration:
    """Choose each block's step operation of an unfused timm ViT for ``config``'s schedule, end to end.

    Args:
        model: A supported timm ViT, not fused (it is left unchanged).
        images: Calibration images, preprocessed for the model (one batch).
        config: The schedule (its ``r`` or ``keep``, ``inflection``, ``clamp``, ``prop_attn``); mode, switch and
            ops are what this chooses.
        choices: The operations a block may take.
        passes: Most coordinate-descent passes over the blocks.
        min_gain: Smallest rise of the mean cosine that a change must bring to be kept.
        progress: Called with (evaluations done, most evaluations left in the search) after every score.

    Returns:
        The chosen operations, their score, the starting schedule's and the search's record.

    Raises:
        ConfigError: no choices, an unknown operation, ``passes < 0`` or ``min_gain < 0``.
        ScheduleError: the schedule cannot be carried out on the model.

    Shapes:
        images: [B, 3, H, W]
    """
    choices = tuple(dict.fromkeys(parse_choice(StepOp, op, "step operation") for op in choices))
    if not choices:
        raise ConfigError("per-block calibration needs at least one step operation to choose from")
    if passes < 0 or min_gain < 0:
        raise ConfigError(f"per-block calibration needs passes >= 0 and min_gain >= 0, got {passes} and {min_gain}")
    runner = OpsRunner(model, images, config)
    num_blocks = runner.num_blocks
    with torch.inference_mode():
        reference = model(images)
    starts = {f"switch {s}": switch_ops(s, num_blocks) for s in range(num_blocks + 1)}
    starts["mean"] = uniform_ops(StepOp.MEAN, num_blocks)
    starts = {name: ops for name, ops in starts.items() if set(ops) <= set(choices)}
    starts = starts or {choices[0].value: uniform_ops(choices[0], num_blocks)}
    active = [b.index for b in runner.plan(next(iter(starts.values()))).blocks if b.r > 0]
    total = len(starts) + passes * len(active) * (len(choices) - 1)
    done = 0

    def score(ops: tuple[StepOp, ...]) -> float:
        nonlocal done
        value = float(output_cosines(runner(ops), reference).mean())
        done += 1
        if progress is not None:
            progress(done, total)
        return value

    start_scores = {name: score(ops) for name, ops in starts.items()}  # switches in order: prefixes shared
    start = max(start_scores, key=lambda name: start_scores[name])  # ties: the first listed
    ops, best = starts[start], start_scores[start]
    changes, sweeps = [], 0
    for sweep in range(passes):
        sweeps, changed = sweep + 1, False
        for block in active:
            for op in choices:
                if op is ops[block]:
                    continue
                candidate = (*ops[:block], op, *ops[block + 1 :])
                value = score(candidate)
                if value > best + min_gain:
                    ops, best, changed = candidate, value, True
                    changes.append(OpsChange(sweep, block, op, value))
        if not changed:
            break
    if progress is not None:
        progress(total, total)
    return OpsCalibration(
        ops=ops,
        score=best,
        start=start,
        start_ops=starts[start],
        start_scores=start_scores,
        changes=tuple(changes),
        sweeps=sweeps,
        evaluations=done,
        images=len(images),
        config=runner.config(ops),
    )
