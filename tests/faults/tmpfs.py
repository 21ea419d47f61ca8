"""A small tmpfs mounted for one test (root only): a full disk, or a read-only file system, on demand."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["mounted_tmpfs"]


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """``folder`` made and mounted as a tmpfs with ``options`` (``"size=256k"``, ``"ro,size=64k"``), unmounted after;
    the test is skipped where it cannot be mounted (not root, no mount permission)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the file size limit tests cover a full disk without it)")
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip() or mounted.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)
