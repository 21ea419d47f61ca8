"""Disk full: a write that fails part-way exits 1 with one line naming the path and saying what ran out, leaves no
temporary file, and leaves a file an earlier run wrote at the path as it was.

Two ways to run out of space: a file size limit on the command's process (``RLIMIT_FSIZE`` with ``SIGXFSZ`` ignored,
so a write past it fails with EFBIG; no root needed) and, where the tests run as root, a small tmpfs filled up
(a real ENOSPC). The commands run in subprocesses, as a user runs them.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.cli.test_bench_files import classifier_file
from tests.faults.tmpfs import mounted_tmpfs
from tofu_edge.cli import app
from tofu_edge.errors import DiskFullError
from tofu_edge.files import atomic_outputs

TOFU = [sys.executable, "-c", "import sys; from tofu_edge.cli import main; sys.argv[0] = 'tofu-edge'; main()"]
OLD = "the file an earlier run wrote\n"
SIZE_LIMIT = "the file size limit is reached (ulimit -f)"
DISK_FULL = "the disk is full (no space left on the device)"
BENCH = ["--warmup", "0", "--iterations", "2", "--threads", "1"]
EXPORT = ["deit_tiny_patch16_224", "--img-size", "32"]
MODEL_ARGS = EXPORT  # a model name timed in eager torch
EXPORT_LIMIT = 1 << 20  # bytes: the tiny ViT's ONNX file is ~22 MB, its report a few kB


def tofu_edge(args, *, file_limit: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process, its files limited to ``file_limit`` bytes (SIGXFSZ ignored: EFBIG instead)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    command = [*TOFU, *map(str, args)]
    preexec = limit if file_limit is not None else None
    return subprocess.run(command, preexec_fn=preexec, capture_output=True, text=True, timeout=timeout)


def assert_refused_and_untouched(result, path: Path, wording: str) -> None:
    """Exit 1, one error line naming ``path``, the earlier file intact and nothing else in its folder."""
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == [f"error: cannot write {path}: {wording}"], result.stderr
    assert path.read_text() == OLD and sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp, report


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` up with a file ``filler`` until a write fails with ENOSPC."""
    handle = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(handle, b"\0" * 4096)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(handle)


@pytest.fixture
def small_disk(tmp_path):
    """A 256 kB tmpfs (root only; unmounted after), for a test to put an earlier file on and `fill`."""
    with mounted_tmpfs(tmp_path / "disk", "size=256k") as mount:
        yield mount


@pytest.mark.parametrize(
    "code, wording", [(errno.ENOSPC, DISK_FULL), (errno.EFBIG, SIZE_LIMIT), (errno.EDQUOT, "the disk quota")]
)
def test_a_write_that_runs_out_of_space_is_one_error_naming_the_output(tmp_path, code, wording):
    model, report = tmp_path / "m.onnx", tmp_path / "m.json"
    model.write_text(OLD)
    with pytest.raises(DiskFullError) as caught, atomic_outputs(model, report) as (tmp_model, tmp_report):
        tmp_model.write_text("half a model")
        raise OSError(code, os.strerror(code))
    assert str(caught.value).startswith(f"cannot write {model}: {wording}") and caught.value.exit_code == 1
    assert model.read_text() == OLD and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_full_disk_names_the_output_whose_temporary_file_failed(tmp_path):
    model, report = tmp_path / "m.onnx", tmp_path / "m.json"
    with pytest.raises(DiskFullError, match=f"cannot write {report}: "), atomic_outputs(model, report) as temps:
        raise OSError(errno.ENOSPC, "No space left on device", str(temps[1]))
    assert list(tmp_path.iterdir()) == []


def test_other_write_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(PermissionError), atomic_outputs(tmp_path / "m.onnx"):
        raise PermissionError(errno.EACCES, "Permission denied")
    assert list(tmp_path.iterdir()) == []


def test_bench_output_past_the_file_size_limit(tmp_path):
    model = classifier_file(tmp_path / "m.onnx")
    output = tmp_path / "out" / "bench.jsonl"
    output.parent.mkdir()
    output.write_text(OLD)
    result = tofu_edge(["bench", model, *BENCH, "--output", output], file_limit=512)  # the JSON lines are ~1.3 kB
    assert_refused_and_untouched(result, output, SIZE_LIMIT)


def test_bench_output_on_a_full_disk(tmp_path, small_disk):
    model = classifier_file(tmp_path / "m.onnx")
    output = small_disk / "bench.jsonl"
    output.write_text(OLD)
    fill(small_disk)
    result = tofu_edge(["bench", model, *BENCH, "--output", output])
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == f"error: cannot write {output}: {DISK_FULL}"
    assert output.read_text() == OLD and sorted(p.name for p in small_disk.iterdir()) == ["bench.jsonl", "filler"]


@pytest.mark.slow
def test_export_past_the_file_size_limit(tmp_path):
    output = tmp_path / "m.onnx"
    output.write_text(OLD)
    result = tofu_edge(["export", *EXPORT, "-o", output], file_limit=EXPORT_LIMIT)
    assert_refused_and_untouched(result, output, SIZE_LIMIT)


@pytest.mark.slow
def test_int8_export_past_the_file_size_limit(tmp_path):
    output = tmp_path / "m.onnx"
    output.write_text(OLD)
    result = tofu_edge(["export", *EXPORT, "-o", output, "--int8"], file_limit=EXPORT_LIMIT)
    assert_refused_and_untouched(result, output, SIZE_LIMIT)


@pytest.mark.slow
def test_diffusion_export_past_the_file_size_limit(tmp_path):
    output = tmp_path / "dit.onnx"
    output.write_text(OLD)
    result = tofu_edge(["diffusion", "export", "tiny-dit", "-o", output, "--parity-runs", "1"], file_limit=64 << 10)
    assert_refused_and_untouched(result, output, SIZE_LIMIT)


@pytest.mark.slow
def test_export_on_a_full_disk(small_disk):
    output = small_disk / "m.onnx"
    output.write_text(OLD)
    fill(small_disk)
    result = tofu_edge(["export", *EXPORT, "-o", output])
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == f"error: cannot write {output}: {DISK_FULL}"
    assert output.read_text() == OLD and sorted(p.name for p in small_disk.iterdir()) == ["filler", "m.onnx"]


# --- in this process, on a full tmpfs: only writes into it fail -------------------------------------------------


def assert_one_line_disk_full(result, path: Path) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: cannot write {path}: {DISK_FULL}\n"
    assert path.read_text() == OLD and sorted(p.name for p in path.parent.iterdir()) == sorted(["filler", path.name])


def test_build_on_a_full_disk(stub_trt, tiny_onnx, small_disk):
    output = small_disk / "m.engine"
    output.write_text(OLD)
    fill(small_disk)
    result = CliRunner(env={"TOFU_EDGE_PLUGINS": None}).invoke(app, ["build", str(tiny_onnx), "-o", str(output)])
    assert_one_line_disk_full(result, output)


def test_visualize_on_a_full_disk(tmp_path, small_disk):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(photo)
    output = small_disk / "fused.png"
    output.write_text(OLD)
    fill(small_disk)
    args = ["visualize", "deit_tiny_patch16_224", str(photo), "--img-size", "32", "--r", "1,1", "-o", str(output)]
    assert_one_line_disk_full(CliRunner().invoke(app, args), output)


def test_bench_plot_on_a_full_disk(small_disk):
    plot = small_disk / "speed.png"
    plot.write_text(OLD)
    fill(small_disk)
    result = CliRunner().invoke(app, ["bench", *MODEL_ARGS, "--sweep", "r=0,1", "--clamp", *BENCH, "--plot", str(plot)])
    assert_one_line_disk_full(result, plot)


def test_calibrate_output_on_a_full_disk(small_disk):
    output = small_disk / "calibration.json"
    output.write_text(OLD)
    fill(small_disk)
    args = ["calibrate", *EXPORT, "--r", "1,1", "--limit", "2", "--output", str(output)]
    assert_one_line_disk_full(CliRunner().invoke(app, args), output)


def test_eval_plot_on_a_full_disk(tmp_path, small_disk):
    from tests.measure.test_accuracy import make_folder

    data = make_folder(tmp_path / "val")
    plot = small_disk / "pareto.png"
    plot.write_text(OLD)
    fill(small_disk)
    args = ["eval", *EXPORT, str(data), "--sweep", "r=0,1", "--clamp", "--limit", "3", "--plot", str(plot)]
    assert_one_line_disk_full(CliRunner().invoke(app, args), plot)


def test_tune_on_a_full_disk(tmp_path, small_disk):
    from tests.measure.test_accuracy import make_folder

    photos = make_folder(tmp_path / "photos", classes=("flat",), per_class=2) / "flat"
    report = small_disk / "tune.json"
    report.write_text(OLD)
    fill(small_disk)
    args = ["tune", *EXPORT, str(photos), "--backend", "torch", "--min-cosine", "0.9", "--report", str(report)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: cannot write {report.with_suffix('.cache.json')}: {DISK_FULL}\n"  # its first write
    assert report.read_text() == OLD and sorted(p.name for p in small_disk.iterdir()) == ["filler", "tune.json"]
