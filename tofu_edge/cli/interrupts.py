"""SIGINT, SIGTERM and SIGHUP as exceptions that unwind, so a killed command cleans up and says so in one line.

Python's default SIGTERM (and SIGHUP: the terminal or the ssh session went away) ends the process at once, skipping
every ``finally`` block, so the temporary files of `tofu_edge.files.atomic_outputs` (``.NAME.XXXX.tmp``) would stay
behind. While a command runs, SIGTERM and SIGHUP raise `Terminated` and SIGINT raises `KeyboardInterrupt` instead:
all unwind through ``finally`` blocks and context managers, which remove the temporary files, and `one_line_errors`
turns them into one line and exit code 143 / 129 / 130 (128 + the signal number, as a shell reports a process the
signal killed). A command that catches
`KeyboardInterrupt` itself (``tune`` keeps its measurements and exits 130) goes on doing so.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["Terminated", "signals_unwind", "interrupted_message", "interrupted_exit_code"]

OUTPUTS_NOTE = "no output was left half-written (files are renamed into place only when a command finishes)"


TERMINATING = (signal.SIGTERM, signal.SIGHUP)  # raise `Terminated`; SIGINT raises `KeyboardInterrupt`


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived. A `BaseException`, like `KeyboardInterrupt`, so ``except Exception`` does not
    swallow it.

    Args:
        number: The signal.
    """

    def __init__(self, number: int = signal.SIGTERM) -> None:
        super().__init__(number)
        self.number = signal.Signals(number)


def _signal_of(error: BaseException) -> signal.Signals:
    return error.number if isinstance(error, Terminated) else signal.SIGINT


def interrupted_exit_code(error: BaseException) -> int:
    """128 + the signal's number: 143 for SIGTERM, 129 for SIGHUP, 130 for SIGINT."""
    return 128 + int(_signal_of(error))


def interrupted_message(error: BaseException) -> str:
    """The one line printed for a command stopped by a signal."""
    return f"interrupted ({_signal_of(error).name}): {OUTPUTS_NOTE}; run the same command again"


@contextlib.contextmanager
def signals_unwind() -> Iterator[None]:
    """While inside, the first SIGTERM or SIGHUP raises `Terminated` and the first SIGINT `KeyboardInterrupt`; later
    ones are ignored so that the clean-up they started is not itself cut short. The previous handlers come back on exit.

    Outside the main thread (where Python cannot install signal handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = []

    def handler(number: int, frame: object) -> None:
        if raised:
            return
        raised.append(number)
        raise Terminated(number) if number in TERMINATING else KeyboardInterrupt()

    previous = {number: signal.signal(number, handler) for number in (*TERMINATING, signal.SIGINT)}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
