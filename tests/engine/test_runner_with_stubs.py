"""`EngineRunner` end to end against stand-ins for TensorRT's runtime and cuda-python.

The stand-ins (tests/stubs/stub_runtime.py, installed by the `cudart` fixture) check the plumbing: buffers, shapes,
profiles, copies, CUDA-event timing and clean-up. Real engines on a real GPU are the `gpu`/`trt` tests in
test_engine_gpu.py; `tofu-edge run` against the same stand-ins is in tests/cli/test_run_command.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.stubs.stub_runtime import EVENT_TICK_MS, stub_plan
from tofu_edge.engine import EngineError, EngineRunner, sidecar_path
from tofu_edge.errors import InputShapeError

CLASSES = 10


def engine_file(tmp_path, shape=(1, 3, 8, 8), profile=None, sidecar=None):
    path = tmp_path / "m.engine"
    path.write_bytes(stub_plan(shape, CLASSES, profile))
    if sidecar is not None:
        sidecar_path(path).write_text(json.dumps(sidecar))
    return path


def test_run_copies_in_executes_and_copies_out(cudart, tmp_path):
    images = np.random.default_rng(0).normal(size=(1, 3, 8, 8)).astype(np.float32)
    with EngineRunner(engine_file(tmp_path)) as runner:
        assert [s.to_dict() for s in runner.inputs] == [{"name": "images", "shape": [1, 3, 8, 8], "dtype": "float32"}]
        assert runner.profile is None
        result = runner.run(images.astype(np.float64))  # cast to the engine's dtype
    assert np.array_equal(result.outputs["logits"], images.reshape(1, -1)[:, :CLASSES])
    assert result.latency_ms == pytest.approx(EVENT_TICK_MS)  # one event pair around copies and execution
    assert cudart.allocations == {}  # close() freed every buffer


def test_outputs_are_copies_that_later_runs_do_not_change(cudart, tmp_path):
    with EngineRunner(engine_file(tmp_path)) as runner:
        first = runner.run(np.ones((1, 3, 8, 8), np.float32)).outputs["logits"]
        runner.run(np.zeros((1, 3, 8, 8), np.float32))
    assert first.sum() == CLASSES


def test_dynamic_batch_grows_buffers_and_checks_the_profile(cudart, tmp_path):
    with EngineRunner(engine_file(tmp_path, (-1, 3, 8, 8), profile=[1, 2, 4])) as runner:
        assert (runner.profile.min, runner.profile.opt, runner.profile.max) == (1, 2, 4)
        for batch in (1, 4, 2):
            images = np.arange(batch * 192, dtype=np.float32).reshape(batch, 3, 8, 8)
            assert runner.run(images).outputs["logits"].shape == (batch, CLASSES)
        with pytest.raises(InputShapeError, match=r"batch 5 is outside the engine's profile \[1, 4\]"):
            runner.run(np.zeros((5, 3, 8, 8), np.float32))
    assert cudart.allocations == {}


def test_wrong_shape_and_wrong_input_names(cudart, tmp_path):
    with EngineRunner(engine_file(tmp_path)) as runner:
        with pytest.raises(InputShapeError, match=r"'images': got shape \[1, 3, 16, 16\], the engine takes"):
            runner.run(np.zeros((1, 3, 16, 16), np.float32))
        with pytest.raises(InputShapeError, match=r"the engine has inputs \['images'\], got \['x'\]"):
            runner.run({"x": np.zeros((1, 3, 8, 8), np.float32)})


def test_benchmark_times_each_execution_between_two_events(cudart, tmp_path):
    with EngineRunner(engine_file(tmp_path)) as runner:
        stats = runner.benchmark(np.zeros((1, 3, 8, 8), np.float32), warmup=3, iterations=7)
    assert stats.samples == 7 and stats.median_ms == pytest.approx(EVENT_TICK_MS)
    assert cudart.executions == 1 + 3 + 7  # the staging run, warm-up, timed runs


def test_a_corrupt_plan_is_a_clear_error_with_the_likely_cause(cudart, tmp_path):
    path = tmp_path / "m.engine"
    path.write_bytes(b"\x00" * 64)
    sidecar_path(path).write_text(json.dumps({"tensorrt_version": "10.3.0", "plugins": ["/x/libtofu_edge_plugins.so"]}))
    with pytest.raises(EngineError) as caught:
        EngineRunner(path)
    message = str(caught.value)
    assert message.startswith(f"cannot deserialize {path}") and "the magic tag does not match" in message
    assert "built with TensorRT 10.3.0: rebuild it" in message and "pass --plugins" in message
