"""kernels/onnxruntime/fetch_onnxruntime_headers.sh on the paths that need no network: headers already there,
no apt-get on the machine, no destination. (The download itself is what CI runs before building.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.kernels.ort_build import ORT_DIR

SCRIPT = ORT_DIR / "fetch_onnxruntime_headers.sh"


@pytest.fixture(scope="module")
def bash() -> str:
    found = shutil.which("bash")
    if found is None:
        pytest.skip("no bash")
    return found


def run(bash: str, *args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path} if path is not None else None
    return subprocess.run([bash, str(SCRIPT), *args], capture_output=True, text=True, env=env)


def test_headers_already_there_are_kept_and_printed(bash, tmp_path):
    include = tmp_path / "headers" / "include"
    include.mkdir(parents=True)
    (include / "onnxruntime_cxx_api.h").write_text("// already fetched\n")
    result = run(bash, str(tmp_path / "headers"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{include}\n"
    assert sorted(p.name for p in (tmp_path / "headers").iterdir()) == ["include"]  # no apt state made


def test_without_apt_get_it_fails_in_one_line_saying_where_else_to_look(bash, tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "mkdir").symlink_to(shutil.which("mkdir"))  # the only tool the script runs before looking for apt-get
    result = run(bash, str(tmp_path / "headers"), path=str(tools))
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "apt-get not found" in line and "release tarball" in line and "-DONNXRUNTIME_INCLUDE_DIR" in line
    assert result.stdout == ""
    assert not (tmp_path / "headers" / "include").exists()


def test_without_a_destination_it_prints_its_usage(bash):
    result = run(bash)
    assert result.returncode == 2 and "usage:" in result.stderr and result.stdout == ""


def test_is_executable():
    assert os.access(SCRIPT, os.X_OK)
    assert Path(SCRIPT).read_text().startswith("#!/usr/bin/env bash\n")
