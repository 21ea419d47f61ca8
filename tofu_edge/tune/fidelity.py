"""`FidelityScorer`: how close each candidate's outputs are to the unfused model's on the tuning images.

PyTorch candidates run through one `tofu_edge.calibrate.OpsRunner`, so candidates that share their leading blocks
(the same token schedule with other step operations) compute those blocks once, as ``calibrate`` does. An exported
file's outputs (INT8) are scored the same way from their arrays.
"""

from __future__ import annotations

import numpy as np
import torch

from tofu_edge.calibrate import OpsRunner, output_cosines
from tofu_edge.config import FusionConfig
from tofu_edge.tune.candidates import Candidate
from tofu_edge.tune.target import Fidelity

__all__ = ["FidelityScorer"]


class FidelityScorer:
    """Scores candidates against the unfused model on fixed images.

    Args:
        model: The unfused timm ViT (not changed).
        images: Preprocessed images.
        labels: Their classes, or ``None`` for unlabelled photos.

    Shapes:
        images: [B, 3, H, W]
        labels: [B] (int64)
    """

    def __init__(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        self._runner = OpsRunner(model, images, FusionConfig())
        self.classifier = bool(getattr(model, "num_classes", 0))
        with torch.inference_mode():
            self.reference = model.eval()(images)
        self._labels = labels if self.classifier else None
        self._reference_top1 = self._top1(self.reference)

    @property
    def images(self) -> int:
        """Tuning images."""
        return len(self.reference)

    def __call__(self, candidate: Candidate) -> Fidelity:
        """The candidate's fidelity, run in PyTorch (fp32; an INT8 candidate is scored with `score_outputs`)."""
        if candidate.config is None:
            return self.score_outputs(self.reference)
        return self.score_outputs(self._runner.outputs(candidate.config))

    def score_outputs(self, outputs: torch.Tensor | np.ndarray) -> Fidelity:
        """The fidelity of outputs for the tuning images (all of them, in order).

        Shapes:
            outputs: [B, ...] as the model returns them
        """
        outputs = torch.as_tensor(outputs)
        cosine = float(output_cosines(outputs.float(), self.reference).mean())
        if not self.classifier:
            return Fidelity(cosine)
        agreement = float((outputs.argmax(-1) == self.reference.argmax(-1)).double().mean())
        if self._labels is None:
            return Fidelity(cosine, agreement, 100.0 * (1.0 - agreement))
        return Fidelity(cosine, agreement, self._reference_top1 - self._top1(outputs))

    def _top1(self, outputs: torch.Tensor) -> float | None:
        """Top-1 accuracy in points, where the images have labels."""
        if self._labels is None:
            return None
        return 100.0 * float((outputs.argmax(-1) == self._labels).double().mean())
