"""Killed mid-run: SIGTERM and SIGINT unwind a command (its temporary files are removed), print one line and exit
143 / 130; nothing is left half-written and the same command run again succeeds.

The signal is sent to the process from inside the phase under test (a hook around the phase's function sends it
to its own process), so the phase is hit every time; one slow test sends it from outside, as an operator would,
once the export's temporary file is on disk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from tofu_edge.cli import app
from tofu_edge.cli.interrupts import Terminated, signals_unwind
from tofu_edge.files import atomic_outputs

MODEL = ["deit_tiny_patch16_224", "--img-size", "32"]
CALIBRATE = ["calibrate", *MODEL, "--r", "1,1", "--limit", "2"]
EXPORT = ["export", *MODEL, "--r", "1,1"]
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGHUP: 129, signal.SIGINT: 130}
START_TIMEOUT_S = 120  # the outside kill waits this long at most for the export's temporary file
PLAIN = "import sys; from tofu_edge.cli import main; sys.argv[0] = 'tofu-edge'; main()"  # the console entry
# the real console entry, with a hook that signals the process when `target` (module:attribute) is first called
HOOKED = """
import importlib, os, signal, sys
from tofu_edge.cli import main
module_name, path = sys.argv[1].split(":")
number = getattr(signal, sys.argv[2])
*owners, attribute = path.split(".")
owner = importlib.import_module(module_name)
for name in owners:
    owner = getattr(owner, name)
original = getattr(owner, attribute)
def hook(*args, **kwargs):
    os.kill(os.getpid(), number)
    return original(*args, **kwargs)
setattr(owner, attribute, hook)
sys.argv = ["tofu-edge", *sys.argv[3:]]
main()
"""


def assert_interrupted(code: int, stderr: str, number: signal.Signals) -> None:
    assert code == EXIT_CODES[number], stderr
    assert stderr.startswith(f"error: interrupted ({number.name})") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("number", "raised"),
    [(signal.SIGTERM, Terminated), (signal.SIGHUP, Terminated), (signal.SIGINT, KeyboardInterrupt)],
)
def test_a_signal_inside_atomic_outputs_removes_the_temporary_files(tmp_path, number, raised):
    with pytest.raises(raised), signals_unwind(), atomic_outputs(tmp_path / "m.onnx", tmp_path / "m.json") as temps:
        for temp in temps:
            temp.write_bytes(b"half")
        os.kill(os.getpid(), number)
        time.sleep(5)  # the signal interrupts this
    assert files_under(tmp_path) == []


def test_the_previous_handlers_come_back_after_a_command():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with signals_unwind():
        assert signal.getsignal(signal.SIGTERM) is not before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_calibrate_killed_during_calibration_says_so_and_runs_again(tmp_path, monkeypatch, number):
    from tofu_edge.calibrate.runner import OpsRunner

    output = tmp_path / "calibration.json"
    original = OpsRunner.__call__

    def signalled(self, ops):
        os.kill(os.getpid(), number)
        return original(self, ops)

    with monkeypatch.context() as patch:
        patch.setattr(OpsRunner, "__call__", signalled)
        result = CliRunner().invoke(app, [*CALIBRATE, "--output", str(output)])
    assert_interrupted(result.exit_code, result.stderr, number)
    assert files_under(tmp_path) == []
    again = CliRunner().invoke(app, [*CALIBRATE, "--output", str(output)])
    assert again.exit_code == 0, again.output
    assert files_under(tmp_path) == ["calibration.json"]


def run_hooked(target: str, number: signal.Signals, args: list[str], tmp_path) -> subprocess.CompletedProcess:
    scratch = tmp_path / "tmp"  # the INT8 export's scratch folder goes here: it must be gone too
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(scratch)}
    return subprocess.run(
        [sys.executable, "-c", HOOKED, target, number.name, *args], capture_output=True, text=True, env=env
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "number", "flags"),
    [
        ("tofu_edge.export.onnx:check_parity", signal.SIGINT, []),
        ("tofu_edge.export.onnx:check_parity", signal.SIGTERM, []),
        ("tofu_edge.export.int8_export:quantize_graph", signal.SIGTERM, ["--int8"]),
    ],
    ids=["parity-sigint", "parity-sigterm", "int8-quantizer-sigterm"],
)
def test_export_killed_in_a_phase_leaves_nothing_and_runs_again(tmp_path, target, number, flags):
    output = tmp_path / "out" / "m.onnx"
    args = [*EXPORT, *flags, "-o", str(output)]
    result = run_hooked(target, number, args, tmp_path)
    assert_interrupted(result.returncode, result.stderr, number)
    assert files_under(output.parent) == [] and not list((tmp_path / "tmp").glob("tofu-edge-*"))
    again = subprocess.run([sys.executable, "-c", PLAIN, *args], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert files_under(output.parent) == ["m.json", "m.onnx"]


@pytest.mark.slow
def test_export_killed_from_outside_once_its_temporary_file_exists(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    command = [sys.executable, "-c", PLAIN, *EXPORT, "-o", str(folder / "m.onnx")]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not list(folder.glob(".m.onnx.*.tmp")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate()
    assert_interrupted(process.returncode, stderr, signal.SIGTERM)
    assert files_under(folder) == []


def test_a_signal_during_the_renames_lands_after_all_of_them(tmp_path, monkeypatch):
    outputs = tmp_path / "m.onnx", tmp_path / "m.json"
    replace = os.replace

    def signalled(source, target):  # SIGTERM between the model's rename and the report's
        os.kill(os.getpid(), signal.SIGTERM)
        replace(source, target)

    monkeypatch.setattr(os, "replace", signalled)
    with pytest.raises(Terminated), signals_unwind(), atomic_outputs(*outputs) as temps:
        for temp in temps:
            temp.write_bytes(b"whole")
    assert files_under(tmp_path) == ["m.json", "m.onnx"]


def tiny_classifier(path):
    """A valid one-input ONNX file: all the TensorRT stand-in reads."""
    from onnx import TensorProto, helper, save

    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["logits"])], "tiny", [images], [logits])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_build_killed_inside_the_engine_builder_says_so_and_runs_again(tmp_path, monkeypatch, stub_trt, number):
    model = tiny_classifier(tmp_path / "m.onnx")
    folder = tmp_path / "out"
    args = ["build", str(model), "-o", str(folder / "m.engine"), "--timing-cache", str(folder / "t.cache")]
    original = stub_trt.Builder.build_serialized_network

    def signalled(self, network, config):
        os.kill(os.getpid(), number)
        return original(self, network, config)

    with monkeypatch.context() as patch:
        patch.setattr(stub_trt.Builder, "build_serialized_network", signalled)
        result = CliRunner().invoke(app, args)
    assert_interrupted(result.exit_code, result.stderr, number)
    assert files_under(folder) == []
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert files_under(folder) == ["m.engine", "m.engine.json", "t.cache"]


@pytest.mark.slow
def test_export_killed_in_its_tensorrt_rtx_build_leaves_nothing_and_runs_again(tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (the dev extra) builds engines on the CPU")
    output = tmp_path / "out" / "m.onnx"
    args = [*EXPORT, "--tensorrt-rtx", "-o", str(output)]
    # the signal lands as the build starts; a builder already inside its C++ code acts on it when it returns
    result = run_hooked("tofu_edge.measure.tensorrt_layers:check_with_tensorrt_rtx", signal.SIGTERM, args, tmp_path)
    assert_interrupted(result.returncode, result.stderr, signal.SIGTERM)
    assert files_under(output.parent) == []
    again = subprocess.run([sys.executable, "-c", PLAIN, *args], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert files_under(output.parent) == ["m.json", "m.onnx"]
