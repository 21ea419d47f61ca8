"""Turn the errors tofu-edge raises on purpose into one line on stderr and an exit code."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from typing import TypeVar

import typer

from tofu_edge.cli.interrupts import Terminated, interrupted_exit_code, interrupted_message, signals_unwind
from tofu_edge.errors import TofuError

__all__ = ["one_line_errors"]

F = TypeVar("F", bound=Callable)

# what a full install has and a device install (README, "Device install") leaves out
FULL_INSTALL_PACKAGES = ("torch", "timm", "torchvision", "onnxscript", "onnxruntime_extensions")


def one_line_errors(command: F) -> F:
    """Wrap a command so a `TofuError` prints ``error: <message>`` and exits with its code (2 usage, 1 check),
    a command that needs a package of the full install says so in one line on a device install, SIGTERM or
    SIGINT unwind the command (its temporary files are removed) and exit 143 or 130 with one line, and a library
    that fails because the working folder was deleted mid-run is one line, exit 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with signals_unwind():
                return command(*args, **kwargs)
        except (Terminated, KeyboardInterrupt) as error:
            with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone: the exit code still tells
                typer.echo(f"error: {interrupted_message(error)}", err=True)
            raise typer.Exit(interrupted_exit_code(error)) from None
        except TofuError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(error.exit_code) from None
        except FileNotFoundError:
            if _working_folder_exists():
                raise
            typer.echo(
                "error: the working folder was deleted during the run and a library needed it; no output was left "
                "half-written; run the command again from a folder that exists",
                err=True,
            )
            raise typer.Exit(1) from None
        except ModuleNotFoundError as error:
            package = (error.name or "").split(".")[0]
            if package not in FULL_INSTALL_PACKAGES:
                raise
            typer.echo(
                f"error: this command needs {package}, which this install does not have (a device install runs "
                "build, run and bench FILE only); install tofu-edge with its dependencies (`pip install .`)",
                err=True,
            )
            raise typer.Exit(2) from None

    return wrapper


def _working_folder_exists() -> bool:
    """Whether the process's working folder still exists (``os.getcwd`` fails once it has been deleted)."""
    try:
        os.getcwd()
    except FileNotFoundError:
        return False
    return True
