"""A model with a static batch over a set of any size: the set in chunks of the batch, the last one padded by
repeating its last image, the padding's outputs dropped. Needs numpy only (a device's runners use it too)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["pad_batch", "run_in_batches"]


def pad_batch(images: np.ndarray, batch: int) -> np.ndarray:
    """``images`` filled up to ``batch`` by repeating the last one (as they are when already ``batch`` long).

    Shapes:
        images: [n, ...] with 1 <= n <= batch
        returns: [batch, ...]
    """
    if len(images) == batch:
        return images
    return np.concatenate([images, np.repeat(images[-1:], batch - len(images), axis=0)])


def run_in_batches(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int | None) -> np.ndarray:
    """``run`` over ``images`` in chunks of a static ``batch`` (``None``: the whole set in one call).

    Args:
        run: Maps an image batch to its outputs (an onnxruntime session, an engine), first axis the batch.
        images: The set.
        batch: The batch ``run`` needs; a short last chunk is padded by repeating its last image, and the
            outputs of the padding are dropped.

    Shapes:
        images: [N, ...]
        returns: [N, ...] what ``run`` returns per image
    """
    if batch is None:
        return run(images)
    chunks = [images[start : start + batch] for start in range(0, len(images), batch)]
    return np.concatenate([run(pad_batch(chunk, batch))[: len(chunk)] for chunk in chunks])
