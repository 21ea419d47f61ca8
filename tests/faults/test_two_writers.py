"""Two writers: two processes write the same outputs at once. Both finish, each file is one whole file of one writer
(never a mix, never half), the model and its report come from the same writer, and no temporary file is left."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest

from tofu_edge.engine.sidecar import inspect_onnx

SIZE = 4 << 20  # bytes per model file, written in chunks so the two writers' writes interleave
CHUNK = 64 << 10
ROUNDS = 20
WRITER = f"""
import sys, time
from pathlib import Path
from tofu_edge.files import atomic_outputs
folder, letter, go = Path(sys.argv[1]), sys.argv[2].encode(), Path(sys.argv[3])
while not go.exists():
    time.sleep(0.001)
for _ in range({ROUNDS}):
    with atomic_outputs(folder / "m.onnx", folder / "m.json") as (model, report):
        with open(model, "wb") as out:
            for _ in range({SIZE // CHUNK}):
                out.write(letter * {CHUNK})
        report.write_bytes(letter * 16)
"""
TOFU = [sys.executable, "-c", "import sys; from tofu_edge.cli import main; sys.argv[0] = 'tofu-edge'; main()"]


def test_two_processes_writing_one_path_leave_one_whole_file_and_a_matching_report(tmp_path):
    go = tmp_path / "go"
    folder = tmp_path / "out"
    folder.mkdir()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), letter, str(go)]) for letter in "AB"]
    go.touch()  # both start together
    reads = 0
    while any(writer.poll() is None for writer in writers):  # read while they write: always one whole file
        try:
            data = (folder / "m.onnx").read_bytes()
        except FileNotFoundError:
            continue
        assert len(data) == SIZE and data.count(data[:1]) == SIZE
        reads += 1
    assert [writer.wait() for writer in writers] == [0, 0]
    model, report = (folder / "m.onnx").read_bytes(), (folder / "m.json").read_bytes()
    assert len(model) == SIZE and model.count(model[:1]) == SIZE and report == model[:1] * 16
    assert sorted(p.name for p in folder.iterdir()) == ["m.json", "m.onnx"]  # no temporary file
    assert reads > 0


@pytest.mark.slow
def test_two_exports_to_one_path_at_once_leave_one_valid_model_and_its_report(tmp_path):
    output = tmp_path / "m.onnx"
    command = [*TOFU, "export", "deit_tiny_patch16_224", "--img-size", "32", "-o", str(output), "--json"]
    exports = [subprocess.Popen([*command, "--seed", seed], stdout=subprocess.PIPE, text=True) for seed in "12"]
    reports = [json.loads(export.communicate(timeout=300)[0]) for export in exports]
    assert [export.returncode for export in exports] == [0, 0]
    onnx.checker.check_model(str(output), full_check=True)
    fingerprint = inspect_onnx(output).metadata["weights_sha256"]
    assert fingerprint in {report["weights_sha256"] for report in reports}
    assert json.loads((tmp_path / "m.json").read_text())["weights_sha256"] == fingerprint  # the same writer's pair
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx"]
