"""`EngineRunner`'s checks that need no GPU: input shapes against the engine and its profile, files, latency stats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tofu_edge.cli.run import render_classification
from tofu_edge.engine import (
    BatchProfile,
    EngineError,
    EngineRunner,
    LatencyStats,
    PreprocessConfig,
    TensorSpec,
    check_input_shape,
)
from tofu_edge.engine.classify import Classification
from tofu_edge.errors import InputShapeError, MissingDependencyError

STATIC = TensorSpec("images", (1, 3, 224, 224), "float32")
DYNAMIC = TensorSpec("images", (-1, 3, 224, 224), "float32")


def test_a_fitting_shape_passes():
    check_input_shape(STATIC, (1, 3, 224, 224), None)
    check_input_shape(DYNAMIC, (8, 3, 224, 224), BatchProfile(1, 4, 8))


@pytest.mark.parametrize(
    "spec, shape, profile, message",
    [
        (STATIC, (1, 3, 160, 160), None, r"got shape \[1, 3, 160, 160\], the engine takes \[1, 3, 224, 224\]"),
        (STATIC, (2, 3, 224, 224), None, r"got shape \[2, 3, 224, 224\]"),
        (STATIC, (3, 224, 224), None, r"got shape \[3, 224, 224\]"),
        (DYNAMIC, (16, 3, 224, 224), BatchProfile(1, 4, 8), r"batch 16 is outside the engine's profile \[1, 8\]"),
        (DYNAMIC, (1, 3, 224, 224), BatchProfile(2, 4, 8), r"batch 1 is outside"),
    ],
)
def test_a_mismatch_names_the_input_and_both_shapes(spec, shape, profile, message):
    with pytest.raises(InputShapeError, match=message):
        check_input_shape(spec, shape, profile)


def test_missing_and_empty_engine_files(tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        EngineRunner(tmp_path / "nope.engine")
    (tmp_path / "empty.engine").write_bytes(b"")
    with pytest.raises(EngineError, match="is empty"):
        EngineRunner(tmp_path / "empty.engine")


def test_without_tensorrt_the_runner_says_how_to_install_it(tmp_path, no_tensorrt):
    (tmp_path / "m.engine").write_bytes(b"plan")
    with pytest.raises(MissingDependencyError, match="pip install tensorrt"):
        EngineRunner(tmp_path / "m.engine")


def test_latency_stats():
    stats = LatencyStats.from_samples([float(v) for v in range(1, 101)])
    assert stats.samples == 100 and stats.min_ms == 1.0
    assert stats.median_ms == pytest.approx(50.5) and stats.p90_ms == pytest.approx(90.1)
    assert stats.p99_ms == pytest.approx(99.01) and stats.mean_ms == pytest.approx(50.5)
    with pytest.raises(ValueError):
        LatencyStats.from_samples([])


def test_run_output_lists_classes_and_cuda_event_latency():
    result = Classification(
        engine_path=Path("m.engine"),
        image_path=Path("cat.jpg"),
        input_shape=(1, 3, 224, 224),
        top=[(281, 0.8123), (282, 0.1)],
        first_run_ms=2.5,
        latency=LatencyStats.from_samples([1.0, 1.2, 1.1]),
        preprocess=PreprocessConfig(),
        tensorrt_version="10.8.0",
    )
    lines = render_classification(result).splitlines()
    assert lines[0] == "cat.jpg through m.engine [1, 3, 224, 224]:"
    assert lines[2:4] == ["   1    281  0.8123", "   2    282  0.1000"]
    assert lines[4].startswith("latency: median 1.100 ms") and "CUDA events" in lines[4]
    assert json.loads(json.dumps(result.to_dict()))["top"][0] == {"class": 281, "probability": 0.8123}
