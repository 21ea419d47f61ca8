"""Turn the errors tofu-edge raises on purpose into one line on stderr and an exit code."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import typer

from tofu_edge.errors import TofuError

__all__ = ["one_line_errors"]

F = TypeVar("F", bound=Callable)


def one_line_errors(command: F) -> F:
    """Wrap a command so a `TofuError` prints ``error: <message>`` and exits with its code (2 usage, 1 check)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except TofuError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(error.exit_code) from None

    return wrapper
