"""Reproducible random weights: model creation under a seed, and a short fingerprint of a model's weights.

An export with random weights records its seed and the fingerprint in the file's metadata (``tofu_edge.seed``,
``tofu_edge.weights_sha256``), so a reader can rebuild the same model (same name, same seed) and check that it did
(same fingerprint) before comparing outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch

__all__ = ["FINGERPRINT_CHARS", "seeded", "weights_fingerprint"]

FINGERPRINT_CHARS = 16  # hex characters kept of the sha256: 64 bits, plenty to tell two models apart


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draws from torch's global generator inside come from ``seed``; the caller's generator state is restored after.

    Example:
        with seeded(0):
            model = timm.create_model("deit_tiny_patch16_224")  # the same weights every time
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def weights_fingerprint(module: torch.nn.Module) -> str:
    """The first `FINGERPRINT_CHARS` hex characters of a sha256 over ``module.state_dict()``.

    Each entry in ``state_dict`` order adds its key, dtype, shape and raw bytes (CPU, contiguous), so the fingerprint
    tells apart models whose weights, layout or precision differ. Fusion patches keep ``state_dict`` keys, so a fused
    model has the fingerprint of the model it was fused from.

    Shapes:
        every tensor of ``module.state_dict()``, any shape and dtype
    """
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:FINGERPRINT_CHARS]
