"""Atomic outputs: all or nothing, with ordinary file permissions."""

import os
import stat

import pytest

from tofu_edge.files import atomic_outputs


def test_outputs_appear_together_with_umask_permissions(tmp_path):
    first, second = tmp_path / "a.onnx", tmp_path / "a.json"
    with atomic_outputs(first, second) as (tmp_first, tmp_second):
        tmp_first.write_text("model")
        tmp_second.write_text("report")
        assert not first.exists() and not second.exists()
    assert first.read_text() == "model" and second.read_text() == "report"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(first.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.onnx"]


def test_a_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_outputs(tmp_path / "a.onnx") as (tmp,):
        tmp.write_text("half")
        raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []


def test_one_version_in_the_package_its_metadata_and_the_changelog():
    import re
    from importlib import metadata
    from pathlib import Path

    import tofu_edge

    changelog = (Path(__file__).parents[1] / "CHANGELOG.md").read_text()
    top = re.search(r"^## (\d+\.\d+\.\d+)", changelog, re.MULTILINE).group(1)
    assert tofu_edge.__version__ == top == metadata.version("tofu-edge")
