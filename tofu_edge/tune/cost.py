"""`CostModel`: latency relative to the unfused model, predicted from a schedule's token counts.

A fused ViT's time is its blocks' time plus a fixed part (patch embedding, head, runtime overhead), and a block's
time follows its MACs (the GEMMs grow with the tokens, attention with their square: the MACs count both); each
fusion step adds a cost of its own. So relative latency is close to linear in two features of the schedule::

    latency / unfused latency = a + b * (MACs ratio - 1) + c * (fusion steps / blocks)

fitted by least squares to the schedules measured so far, one fit per precision (``a`` is 1 for float, the
INT8 unfused model's ratio for INT8). It ranks the schedules not yet measured; only measurements decide.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tofu_edge.tune.candidates import Candidate

__all__ = ["CostModel"]


class CostModel:
    """Latency ratios (variant / unfused float model) predicted from measured candidates.

    Args:
        num_blocks: Blocks of the model (scales the step count).
    """

    def __init__(self, num_blocks: int) -> None:
        self._num_blocks = num_blocks
        self._points: dict[bool, list[tuple[Candidate, float]]] = {False: [], True: []}
        self._coefficients: dict[bool, np.ndarray] = {}

    def add(self, candidate: Candidate, ratio: float) -> None:
        """Record a measured latency ratio (variant / unfused; the inverse of the speed-up) and refit."""
        points = self._points[candidate.int8]
        points[:] = [(c, v) for c, v in points if c.key != candidate.key] + [(candidate, ratio)]
        coefficients = self._fit(points, fixed_intercept=not candidate.int8)
        if coefficients is None:
            self._coefficients.pop(candidate.int8, None)
        else:
            self._coefficients[candidate.int8] = coefficients

    def ready(self, int8: bool = False) -> bool:
        """Whether enough schedules of this precision were measured to predict (two fused, or one and INT8's r = 0)."""
        return int8 in self._coefficients

    def predict(self, candidate: Candidate) -> float | None:
        """Predicted latency ratio (variant / unfused float model); ``None`` before `ready`."""
        coefficients = self._coefficients.get(candidate.int8)
        if coefficients is None:
            return None
        return float(max(coefficients @ self._features(candidate), 1e-3))

    def _features(self, candidate: Candidate) -> np.ndarray:
        return np.array([1.0, candidate.macs_ratio - 1.0, candidate.steps / self._num_blocks])

    def _fit(self, points: Sequence[tuple[Candidate, float]], *, fixed_intercept: bool) -> np.ndarray | None:
        """Least squares; a float fit passes through (unfused, 1). Too few points: the MACs term alone."""
        features = np.array([self._features(c) for c, _ in points]).reshape(-1, 3)
        ratios = np.array([v for _, v in points])
        if fixed_intercept:
            fused = features[:, 2] > 0
            if not fused.any():
                return None
            columns = [1, 2] if fused.sum() >= 2 else [1]
            solution, *_ = np.linalg.lstsq(features[fused][:, columns], ratios[fused] - 1.0, rcond=None)
            coefficients = np.array([1.0, 0.0, 0.0])
            coefficients[columns] = solution
            return coefficients
        if len(points) < 2:
            return None
        columns = [0, 1, 2] if len(points) >= 3 else [0, 1]
        solution, *_ = np.linalg.lstsq(features[:, columns], ratios, rcond=None)
        coefficients = np.zeros(3)
        coefficients[columns] = solution
        return coefficients
