"""Atomic file output: write beside the target, then rename, so a failure leaves nothing half-written.

Two processes writing the same path each write their own temporary file and rename it into place; the rename is
atomic, so the path always holds one whole file (the last one renamed), never a mix. The renames of one set of
outputs (a model and its report) run under a lock on their folder, so two writers never leave the model of one
beside the report of the other. A write that fails because the
disk is full (or the process's file size limit, ``ulimit -f``, is reached) is one line naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from tofu_edge.errors import DiskFullError, OutputError

__all__ = ["atomic_outputs", "check_writable"]

# errno -> what ran out, for the message of a write that failed part-way
_FULL = {
    errno.ENOSPC: "the disk is full (no space left on the device)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file size limit is reached (ulimit -f)",
}


def check_writable(path: Path) -> None:
    """Fail early, before any work, when ``path`` cannot be written.

    A file is created and removed in the folder: a place where no file can be made (no permission, a read-only
    mount, under ``/proc``) fails here, whoever runs the command (root passes ``os.access`` checks there).

    Raises:
        OutputError: the folder cannot be created or written, or ``path`` is a folder.
    """
    if path.is_dir():
        raise OutputError(f"output {path} is a folder; give a file name such as {path / 'model.onnx'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the folder of {path}: {error.strerror}") from None
    try:
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
    except OSError as error:
        reason = (error.strerror or type(error).__name__).lower()
        raise OutputError(f"cannot create files in {path.parent} (for {path.name}): {reason}") from None
    os.close(handle)
    os.unlink(probe)


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

    Raises:
        DiskFullError: a write inside failed for want of space (ENOSPC, EDQUOT) or past the file size limit (EFBIG);
            the message names the output path. Files already at ``paths`` are left as they were.
    """
    temps = []
    try:
        for path in paths:
            with _signals_held():  # a temporary file is made and recorded for clean-up, or not made
                handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                os.close(handle)
                temps.append(Path(name))
        yield temps
        mode = 0o666 & ~_umask()  # what a plain open() would give, not mkstemp's owner-only 0o600
        with _signals_held(), _folders_locked(paths):  # all of the set renamed, or none
            for temp, path in zip(temps, paths, strict=True):
                os.chmod(temp, mode)
                os.replace(temp, path)
    except OSError as error:
        if error.errno not in _FULL:  # our own OutputErrors have no errno and pass through too
            raise
        raise DiskFullError(f"cannot write {_target(error, temps, paths)}: {_FULL[error.errno]}") from None
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)


def _target(error: OSError, temps: list[Path], paths: tuple[Path, ...]) -> Path:
    """The output path a failed write was for: the one whose temporary file failed, the file the error names
    (a scratch file elsewhere), or the first output."""
    failed = Path(error.filename) if isinstance(error.filename, str) else None
    for temp, path in zip(temps, paths, strict=False):
        if failed == temp:
            return path
    return failed if failed is not None else paths[0]


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP wait until the block is done, then are raised again with the handlers from before.

    A killed command (`tofu_edge.cli.interrupts`) unwinds where the signal lands; a signal held here lands after the
    renames of one set of outputs, so it leaves all of them or none. Only the main thread runs Python signal
    handlers, so elsewhere there is nothing to hold.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    held = {number: handler for number, handler in previous.items() if handler is not None}  # None: set from C
    for number in held:
        signal.signal(number, lambda number, frame: caught.append(number))
    try:
        yield
    finally:
        for number, handler in held.items():
            signal.signal(number, handler)
        if caught:
            signal.raise_signal(caught[0])


@contextlib.contextmanager
def _folders_locked(paths: tuple[Path, ...]) -> Iterator[None]:
    """An exclusive ``flock`` on each folder of ``paths`` (sorted, so two writers cannot deadlock), released on exit.

    Locking the folder itself leaves no lock file behind. Where a folder cannot be locked (a file system without
    ``flock``) the renames go ahead unlocked: each file is still whole, only a set of several may mix.
    """
    with contextlib.ExitStack() as stack:
        for folder in sorted({str(path.parent.resolve()) for path in paths}):
            try:
                handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            stack.callback(os.close, handle)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
            except OSError:
                continue
            stack.callback(fcntl.flock, handle, fcntl.LOCK_UN)
        yield
