"""Atomic file output: write beside the target, then rename, so a failure leaves nothing half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tofu_edge.errors import OutputError

__all__ = ["atomic_outputs", "check_writable"]


def check_writable(path: Path) -> None:
    """Fail early, before any work, when ``path`` cannot be written.

    Raises:
        OutputError: the folder cannot be created or written, or ``path`` is a folder.
    """
    if path.is_dir():
        raise OutputError(f"output {path} is a folder; give a file name such as {path / 'model.onnx'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the folder of {path}: {error.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"cannot write to {path.parent}: permission denied")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_outputs(*paths: Path) -> Iterator[list[Path]]:
    """Temporary paths for ``paths``; on success all are renamed into place, on any error all are removed.

    Example:
        with atomic_outputs(model_path, report_path) as (tmp_model, tmp_report):
            write(tmp_model); write(tmp_report)
    """
    temps = []
    try:
        for path in paths:
            handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(handle)
            temps.append(Path(name))
        yield temps
        mode = 0o666 & ~_umask()  # what a plain open() would give, not mkstemp's owner-only 0o600
        for temp, path in zip(temps, paths, strict=True):
            os.chmod(temp, mode)
            os.replace(temp, path)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
