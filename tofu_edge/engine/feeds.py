"""`example_feeds`: seeded inputs for every input a model file declares, from its declared shapes and dtypes and the
``tofu_edge.input_ranges`` metadata (what `bench` times a file with, and what `run` checks a file against).

Float inputs get a standard normal draw; integer inputs get seeded integers in the half-open range the metadata
records for them (a diffusion export records ``timestep`` in ``[0, 1000)`` and DiT's ``class_labels`` in
``[0, classes)``), or zeros without one (index 0 is valid for every embedding table); a float input with a recorded
range (a float ``timestep``) gets integers of that range as floats. Only the batch axis may be dynamic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tofu_edge.engine.sidecar import TensorSpec
from tofu_edge.errors import ConfigError
from tofu_edge.export.metadata import MetadataKey

__all__ = ["example_feeds", "is_single_image_model"]

_FLOATS = {"float32": np.float32, "float16": np.float16, "float64": np.float64}
_INTS = {"int64": np.int64, "int32": np.int32, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}


def example_feeds(
    inputs: Sequence[TensorSpec], metadata: Mapping[str, Any], batch: int, seed: int, file: str
) -> dict[str, np.ndarray]:
    """Seeded arrays for every input, the dynamic batch axis set to ``batch``.

    Args:
        inputs: The declared inputs (name, shape with ``-1`` for a dynamic axis, dtype name).
        metadata: The file's ``tofu_edge.*`` metadata, prefix removed, JSON values parsed.
        batch: Size of a dynamic batch axis (a static one stays as declared).
        seed: Seed of the draws.
        file: The file's name, for messages.

    Returns:
        Input name -> array of the declared dtype.

    Shapes:
        each array: the input's declared shape, e.g. images [B, 3, H, W]; timestep [B]; class_labels [B]

    Raises:
        ConfigError: an input with a dynamic axis other than the batch, or of a dtype that cannot be drawn.
    """
    generator = np.random.default_rng(seed)
    ranges = metadata.get(MetadataKey.INPUT_RANGES)
    ranges = ranges if isinstance(ranges, dict) else {}
    feeds = {}
    for spec in inputs:
        if any(d < 0 for d in spec.shape[1:]):
            raise ConfigError(
                f"{file}: input {spec.name!r} has the dynamic shape {list(spec.shape)}; only the batch axis may be "
                "dynamic for tofu-edge to feed it (export with static shapes)"
            )
        shape = tuple(batch if d < 0 else d for d in spec.shape)
        span = ranges.get(spec.name)
        if spec.dtype in _FLOATS and span is None:
            feeds[spec.name] = generator.standard_normal(shape, dtype=np.float32).astype(_FLOATS[spec.dtype])
        elif spec.dtype in _FLOATS or spec.dtype in _INTS:
            dtype = _FLOATS.get(spec.dtype) or _INTS[spec.dtype]
            low, high = span if span is not None else (0, 1)
            feeds[spec.name] = generator.integers(low, high, size=shape).astype(dtype)
        else:
            raise ConfigError(f"{file}: input {spec.name!r} is {spec.dtype}, which tofu-edge cannot feed")
    return feeds


def is_single_image_model(inputs: Sequence[TensorSpec], metadata: Mapping[str, Any]) -> bool:
    """Whether the file takes one image batch ``[B, C, H, W]`` and nothing else (a classifier, not a diffusion step)."""
    return len(inputs) == 1 and len(inputs[0].shape) == 4 and MetadataKey.DIFFUSION_PLAN not in metadata
