"""The shipped Python app export/python/run_engine.py: the same preprocessing as tofu_edge, inputs for the C++ app."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.engine.test_preprocess import CASES, photo
from tofu_edge.engine import PreprocessConfig, preprocess_image

APP = Path(__file__).resolve().parents[2] / "export" / "python" / "run_engine.py"


def load_app():
    spec = importlib.util.spec_from_file_location("run_engine", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("image_size, size, interpolation, crop_pct", CASES)
def test_the_shipped_python_app_preprocesses_the_same(image_size, size, interpolation, crop_pct):
    app = load_app()
    config = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.25], "crop_pct": crop_pct, "interpolation": interpolation}
    _, theirs = app.preprocess(photo(image_size), *size, app.Preprocess(config))
    ours = preprocess_image(photo(image_size), size, PreprocessConfig.from_dict(config))
    assert np.array_equal(theirs, ours)


def test_app_prepare_writes_inputs_for_the_cpp_app(tmp_path):
    photo((300, 200)).save(tmp_path / "cat.png")
    for name in ("cat.bin", "cat.ppm", "cat.npy"):
        result = subprocess.run(
            [sys.executable, APP, "prepare", tmp_path / "cat.png", tmp_path / name, "--size", "32"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
    expected = preprocess_image(photo((300, 200)), (32, 32))
    assert np.array_equal(np.fromfile(tmp_path / "cat.bin", "<f4").reshape(1, 3, 32, 32), expected)
    assert np.array_equal(np.load(tmp_path / "cat.npy"), expected)
    with Image.open(tmp_path / "cat.ppm") as ppm:
        assert ppm.format == "PPM" and ppm.size == (32, 32) and ppm.mode == "RGB"


def test_app_run_without_tensorrt_is_one_line(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the missing-TensorRT message cannot show")
    result = subprocess.run(
        [sys.executable, APP, "run", tmp_path / "m.engine", tmp_path / "cat.jpg"], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.startswith("error: TensorRT's Python bindings are missing")
    assert result.stderr.count("\n") == 1
