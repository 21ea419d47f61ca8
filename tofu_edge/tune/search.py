"""`tune`: the fastest schedule that keeps a fidelity, or the most faithful one at a speed, measured on a backend.

The search runs in budgeted phases (`Tuner`):

1. **Fidelity of token schedules.** Every schedule of `token_schedules` (MLERP steps) is scored on the images in
   PyTorch, coarse to fine over the MACs range, until 30 % of the budget is spent.
2. **Seeds.** Two schedules near where the target should lie (by MACs) are prepared on the backend and timed with
   the unfused model; a `CostModel` is fitted to them (with ``int8``: the INT8 unfused model and one INT8 schedule).
3. **Step operations.** The schedules the target ranks best are scored again with ToMe's mean, ``tofu`` switches
   and, while the budget allows, the per-block operations ``calibrate`` picks (sharing their leading blocks).
4. **Measurements.** The best-ranked candidate that is predicted to meet the target and is not yet timed is
   timed, the cost model refitted, and so on until no untimed candidate could beat the best timed one (for a
   fidelity target: none is predicted within `SPEED_NOISE` of its speed), or the budget is spent. Only timed
   candidates can be chosen.
5. **Final round.** The choice and up to two runners-up are timed once more, side by side with the unfused model
   in one fresh run, and the best of them by that run is the pick; its first and final figures are both reported.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tofu_edge.arch import ViTArch
from tofu_edge.calibrate import calibrate_ops
from tofu_edge.errors import ConfigError, ParityError
from tofu_edge.tune.cache import TuneCache
from tofu_edge.tune.candidates import Candidate, op_variants, token_schedules, unfused_candidate, with_ops
from tofu_edge.tune.cost import CostModel
from tofu_edge.tune.fidelity import FidelityScorer
from tofu_edge.tune.latency import LatencyLab, Measurement
from tofu_edge.tune.points import Point, rank
from tofu_edge.tune.settings import TuneSettings
from tofu_edge.tune.target import Fidelity, Target, TargetKind

__all__ = ["Tuner", "SearchOutcome"]

FIDELITY_SHARE = 0.30  # of the budget: scoring the token schedules
OPS_SHARE = 0.55  # the step-operation phase starts no later than this share of the budget
SHORTLIST = 3  # schedules whose step operations are tried
SEED_TRIES = 3  # schedules tried for a seed whose export fails its parity check
SPEED_MARGIN = 0.97
SPEED_NOISE = 0.05  # timings of one candidate in separate runs differ by up to about this much on a CPU
FINALISTS = 3  # timed again side by side at the end  # a predicted speed within 3 % of the target is still worth timing
Progress = Callable[[str, float], None]  # (phase, fraction of the budget spent)


@dataclass
class SearchOutcome:
    """What the phases found: every point, the choice (``None``: nothing timed) and its re-measurement."""

    points: list[Point]
    chosen: Point | None
    met: bool
    remeasured: Measurement | None
    unfused_ms: float | None
    notes: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)


class Tuner:
    """The search of one model on one backend (see the module docstring).

    Args:
        model: The unfused timm ViT, weights loaded.
        arch: Its static sizes.
        images: The tuning images; ``labels`` their classes or ``None``.
        target: What to meet.
        settings: Backend, batch, budget, ...
        cache: Measurements of an earlier run to reuse, and where to keep this run's.
        progress: Called with the phase and the fraction of the budget spent.
        started: ``time.perf_counter()`` when the run began (model loading counts against the budget too).

    Shapes:
        images: [B, 3, H, W]
        labels: [B]
    """

    def __init__(
        self,
        model: torch.nn.Module,
        arch: ViTArch,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        target: Target,
        settings: TuneSettings,
        cache: TuneCache,
        progress: Progress | None = None,
        started: float | None = None,
    ) -> None:
        self.model, self.arch, self.images, self.target, self.settings = model, arch, images, target, settings
        self.cache, self._progress = cache, progress
        self.scorer = FidelityScorer(model, images, labels)
        if target.kind is TargetKind.MAX_TOP1_DROP and not self.scorer.classifier:
            raise ConfigError("--max-top1-drop needs a classifier; this model outputs features: use --min-cosine")
        self.labelled = labels is not None and self.scorer.classifier
        self.cost = CostModel(arch.num_blocks)
        self.unfused = unfused_candidate(arch)
        self.points: dict[str, Point] = {}
        self.unfused_ms: float | None = None
        self.notes: list[str] = []
        self._started = time.perf_counter() if started is None else started  # the budget counts from here
        self._phases: dict[str, float] = {}

    # -- the budget -------------------------------------------------------------------------------------------------

    def spent(self) -> float:
        """Fraction of the budget spent."""
        return (time.perf_counter() - self._started) / self.settings.budget_s

    def left_s(self) -> float:
        return self.settings.budget_s * (1.0 - self.spent())

    def _phase(self, name: str) -> None:
        self._phases[name] = round(time.perf_counter() - self._started, 2)
        if self._progress is not None:
            self._progress(name, min(1.0, self.spent()))

    def _measurement_cost_s(self, new_candidates: int) -> float:
        """Expected seconds of a timing run with this many candidates to prepare (the slowest preparation so far)."""
        prepare = max(self.lab.prepare_seconds, default=0.0)
        return new_candidates * prepare + self.settings.timing_seconds + 1.0

    def _reserve_s(self) -> float:
        """Seconds kept for the final re-measurement."""
        return self.settings.timing_seconds * 2 + 1.0

    # -- the phases -------------------------------------------------------------------------------------------------

    def run(self) -> SearchOutcome:
        """All phases; the outcome."""
        with LatencyLab(
            self.model,
            backend=self.settings.backend,
            device=self.settings.device,
            batch=self.settings.batch,
            threads=self.settings.threads,
            compile=self.settings.compile,
        ) as self.lab:
            self._point(self.unfused).fidelity = self.scorer(self.unfused)
            self._score_schedules()
            self._seed()
            self._score_operations()
            self._measure_best()
            chosen, met = self._choose()
            chosen, remeasured = self._final_round(chosen, met)
        self._phase("done")
        return SearchOutcome(
            list(self.points.values()), chosen, met, remeasured, self.unfused_ms, self.notes, self._phases
        )

    def _score_schedules(self) -> None:
        """Phase 1: MLERP fidelity of the token schedules, coarse to fine, within `FIDELITY_SHARE`."""
        schedules = token_schedules(self.arch)
        for index in _coarse_to_fine(len(schedules)):
            if self.spent() >= FIDELITY_SHARE:
                self.notes.append(
                    f"scored {sum(1 for p in self.points.values() if p.fidelity)} of "
                    f"{len(schedules)} token schedules within the budget"
                )
                break
            self._score(schedules[index])
            self._phase("fidelity")

    def _seed(self) -> None:
        """Phase 2: time two schedules near the target's MACs and fit the cost model."""
        scored = [p.candidate for p in self.points.values() if p.fidelity is not None and p.candidate.steps]
        if not scored:
            raise ConfigError("no token schedule could be scored within the budget; raise --budget-min")
        guess = self._macs_guess()
        first = self._seed_near(scored, guess, required=True)  # needed for any answer, whatever the budget says
        if first is None:
            return
        spread = -0.15 if first.macs_ratio > 0.5 else 0.15  # a second point, inside the range, for the slope
        self._seed_near([c for c in scored if c.key != first.key], first.macs_ratio + spread)
        if self.settings.int8:
            for candidate in (self.unfused.quantized(), first.quantized()):
                if self.left_s() > self._measurement_cost_s(1) + self._reserve_s():
                    self._measure([candidate])
        self._phase("seeds")

    def _seed_near(self, scored: list[Candidate], macs_ratio: float, required: bool = False) -> Candidate | None:
        """Time the schedule closest to ``macs_ratio`` (the next closest where an export fails its parity check);
        unless ``required``, only while the budget allows."""
        nearest = sorted(scored, key=lambda c: abs(c.macs_ratio - macs_ratio))
        for candidate in nearest[:SEED_TRIES]:
            if not required and self.left_s() < self._measurement_cost_s(1) + self._reserve_s():
                return None
            self._measure([candidate])
            if self.points[candidate.key].measured:
                return candidate
        return None

    def _score_operations(self) -> None:
        """Phase 3: other step operations on the best-ranked schedules; per-block operations on the best one."""
        shortlist = self._shortlist()
        for point in shortlist:
            for variant in op_variants(point.candidate, self.arch):
                if self.spent() >= OPS_SHARE:
                    return
                self._score(variant)
            self._phase("operations")
        if shortlist and self.spent() < OPS_SHARE - 0.1:  # coordinate descent: about 2 L + 2 passes' worth
            best = shortlist[0].candidate
            schedule = dataclasses.replace(best.config, ops=None)
            calibration = calibrate_ops(self.model, self.images, schedule, passes=1)
            self._score(with_ops(best, calibration.ops))
            self._phase("operations")
        if self.settings.int8:
            for point in self._shortlist():
                twin = self._point(point.candidate.quantized())
                if twin.fidelity is None:
                    twin.fidelity, twin.fidelity_estimated = point.fidelity, True

    def _measure_best(self) -> None:
        """Phase 4: time the best-ranked untimed candidate that could beat the best timed one, until none can."""
        while True:
            self._predict()
            ranked = rank(list(self.points.values()), self.target, self.labelled)
            best = next((p for p in ranked if p.measured and p.meets(self.target, self.unfused_ms)), None)
            untimed = [p for p in ranked if not p.measured and p.meets(self.target, self.unfused_ms, SPEED_MARGIN)]
            if best is not None:  # only what ranks above the best timed point (or ties it within noise) can win
                untimed = [p for p in untimed if ranked.index(p) < ranked.index(best) or self._within_noise(p, best)]
            if not untimed:
                return
            if self.left_s() < self._measurement_cost_s(1) + self._reserve_s():
                self.notes.append(f"budget spent with {len(untimed)} promising candidates untimed")
                return
            self._measure([untimed[0].candidate])
            self._phase("measure")

    def _choose(self) -> tuple[Point | None, bool]:
        """The best timed point meeting the target, else the closest timed point; and whether it meets it."""
        timed = [p for p in self.points.values() if p.measured and p.fidelity is not None]
        ranked = rank(timed, self.target, self.labelled)
        meeting = [p for p in ranked if p.meets(self.target, self.unfused_ms)]
        fused = [p for p in timed if p.candidate.config is not None]
        if fused and max(p.speedup for p in fused) < 1.0:
            fastest = max(fused, key=lambda p: p.speedup)
            self.notes.append(
                f"fusion does not pay here: the fastest fused schedule timed ({fastest.candidate.name}) runs at "
                f"{fastest.speedup:.2f}x the unfused model; use r = 0 (no fusion) on this device and backend"
            )
        if meeting:
            return meeting[0], True
        if not timed:
            return None, False
        return min(timed, key=lambda p: self._shortfall(p)), False

    def _final_round(self, chosen: Point | None, met: bool) -> tuple[Point | None, Measurement | None]:
        """Phase 5: the choice and the runners-up timed once more, side by side in one fresh run; the pick is the
        best of them by that run (timings from separate runs differ by a few per cent on a CPU, the ranking
        within one run much less). Returns the pick and its final measurement."""
        if chosen is None:
            return None, None
        timed = [p for p in self.points.values() if p.measured and p.fidelity is not None]
        ranked = [p for p in rank(timed, self.target, self.labelled) if p.meets(self.target, self.unfused_ms)]
        finalists = ranked[:FINALISTS] if met else [chosen]
        fused = [p.candidate for p in finalists if p.candidate.config is not None or p.candidate.int8]
        if not fused:
            return chosen, chosen.measurement  # the unfused model against itself: 1.0 by definition
        self._phase("final round")
        seconds = max(self.settings.timing_seconds, min(2 * self.settings.timing_seconds, self.left_s() - 1.0))
        final = self.lab.measure(self.unfused, fused, seconds)
        unfused_ms = next(iter(final.values())).unfused_ms
        trial = {}
        for point in finalists:
            again = final.get(point.candidate.key) or Measurement(1.0, unfused_ms, unfused_ms, 0)
            trial[point.candidate.key] = Point(point.candidate, point.fidelity, measurement=again)
        again_ranked = rank(list(trial.values()), self.target, self.labelled)
        meeting = [p for p in again_ranked if p.meets(self.target, unfused_ms)]
        if met and not meeting:
            self.notes.append(f"timed again, no finalist met {self.target.describe()}: keeping the first timing's pick")
        pick = meeting[0] if meeting else trial[chosen.candidate.key]
        if pick.candidate.key != chosen.candidate.key:
            self.notes.append(
                f"the final round put {pick.candidate.name} ahead of {chosen.candidate.name} (one run, side by side)"
            )
        return self.points[pick.candidate.key], pick.measurement

    def _within_noise(self, point: Point, best: Point) -> bool:
        """For a fidelity target: an untimed point predicted about as fast as the best timed one (timings of
        separate runs differ by a few per cent) is worth timing too."""
        return not self.target.wants_speed and point.speedup >= best.speedup * (1.0 - SPEED_NOISE)

    # -- helpers ----------------------------------------------------------------------------------------------------

    def _point(self, candidate: Candidate) -> Point:
        point = self.points.get(candidate.key)
        if point is None:
            point = self.points[candidate.key] = Point(candidate)
            cached = self.cache.fidelity.get(candidate.key)
            if cached is not None:
                point.fidelity = Fidelity(**cached)
            timed = self.cache.latency.get(candidate.key)
            if timed is not None and "failed" in timed:
                point.failed = timed["failed"]
            elif timed is not None:
                self._record(point, Measurement(**timed))
        return point

    def _score(self, candidate: Candidate) -> None:
        point = self._point(candidate)
        if point.fidelity is None or point.fidelity_estimated:
            point.fidelity, point.fidelity_estimated = self.scorer(candidate), False
            self.cache.fidelity[candidate.key] = dataclasses.asdict(point.fidelity)
            self.cache.save()

    def _measure(self, candidates: list[Candidate]) -> None:
        """Time the candidates not yet timed (one interleaved run with the unfused model); INT8 ones are scored
        from their exported file. A candidate whose export fails its parity check is marked and left out."""
        todo = []
        for candidate in candidates:
            point = self._point(candidate)
            if (candidate.config is None and not candidate.int8) or point.measured or point.failed:
                continue
            try:
                self.lab.prepare(candidate)
            except ParityError as error:
                point.failed = str(error)
                self.cache.latency[candidate.key] = {"failed": point.failed}
                self.notes.append(f"left out {candidate.name}: its export failed the parity check ({error})")
                continue
            todo.append(candidate)
        if todo:
            for key, measurement in self.lab.measure(self.unfused, todo, self.settings.timing_seconds).items():
                point = self.points[key]
                self._record(point, measurement)
                self.cache.latency[key] = measurement.to_dict()
                if point.candidate.int8:
                    point.fidelity = self.scorer.score_outputs(self.lab.outputs(point.candidate, self.images))
                    point.fidelity_estimated = False
                    self.cache.fidelity[key] = dataclasses.asdict(point.fidelity)
        self.cache.save()

    def _record(self, point: Point, measurement: Measurement) -> None:
        point.measurement = measurement
        self.unfused_ms = measurement.unfused_ms if self.unfused_ms is None else self.unfused_ms
        self.cost.add(point.candidate, 1.0 / measurement.speedup)
        if self.unfused.key not in self.points:
            self.points[self.unfused.key] = Point(self.unfused)
        unfused = self.points[self.unfused.key]
        if unfused.measurement is None:
            unfused.measurement = Measurement(1.0, measurement.unfused_ms, measurement.unfused_ms, measurement.rounds)

    def _predict(self) -> None:
        for point in self.points.values():
            point.predicted_ratio = self.cost.predict(point.candidate)

    def _macs_guess(self) -> float:
        """The MACs ratio where the target should lie: 1 / speed-up for a speed target, the cheapest schedule
        keeping the fidelity for a fidelity target."""
        if self.target.kind is TargetKind.SPEEDUP:
            return 1.0 / self.target.value
        if self.target.kind is TargetKind.LATENCY_MS:
            return 0.6
        keeping = [
            p.candidate.macs_ratio
            for p in self.points.values()
            if p.fidelity is not None and p.candidate.steps and self.target.fidelity_ok(p.fidelity)
        ]
        return min(keeping, default=0.9)

    def _shortlist(self) -> list[Point]:
        """The schedules ranked best for the target (predicted), and near misses a better operation might lift."""
        self._predict()
        schedules = [
            p
            for p in self.points.values()
            if p.candidate.steps
            and not p.candidate.int8
            and p.candidate.config.mode.value == "mlerp"
            and p.candidate.config.ops is None
        ]
        meeting = [
            p
            for p in rank(schedules, self.target, self.labelled)
            if p.meets(self.target, self.unfused_ms, SPEED_MARGIN)
        ]
        misses = sorted(
            (p for p in schedules if p not in meeting and p.speedup is not None and p.fidelity), key=self._shortfall
        )
        return (meeting[: SHORTLIST - 1] + misses[:1]) if meeting else misses[:SHORTLIST]

    def _shortfall(self, point: Point) -> float:
        latency = point.latency_ms(self.unfused_ms)
        return self.target.shortfall(point.speedup or 0.0, latency or float("inf"), point.fidelity)


def _coarse_to_fine(count: int) -> list[int]:
    """Indices 0..count-1 ordered so that every prefix spreads over the range: ends, middle, quarters, ..."""
    order, seen, step = [], set(), count
    for index in (0, count - 1):
        if 0 <= index < count and index not in seen:
            order.append(index)
            seen.add(index)
    while len(order) < count and step > 0:
        step //= 2
        for index in range(step, count, max(step, 1)):
            if index not in seen:
                order.append(index)
                seen.add(index)
    order += [i for i in range(count) if i not in seen]
    return order
