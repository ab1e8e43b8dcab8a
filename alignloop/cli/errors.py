"""The one error wrapper of every command: input errors end with one line and exit status 2.

What counts as input: any `alignloop.errors.UserError` (a recipe key, a data line, a model
name, a campaign, a folder to resume...), the operating system's word that a path the person
named is missing or of the wrong kind, or that a wait they bounded ran out, and a database URL
that SQLAlchemy cannot open. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape

from alignloop.errors import UserError

__all__ = ["err", "friendly_errors", "user_error_types"]

err = Console(stderr=True, highlight=False)

# Raised by open(), Path.read_text() and socket waits on what the person gave; they cannot
# subclass UserError, so they are named here.
OS_INPUT_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, IsADirectoryError, NotADirectoryError,
                                                    TimeoutError)


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types shown as one line. SQLAlchemy's is looked up only once a command has
    imported it: the commands that never touch a database must not pay for loading it."""
    types = (UserError, *OS_INPUT_ERRORS)
    if "sqlalchemy.exc" in sys.modules:
        types += (sys.modules["sqlalchemy.exc"].OperationalError,)
    return types


def error_message(error: BaseException) -> str:
    # SQLAlchemy wraps the driver's words (`orig`), which are the ones that say what is wrong.
    return str(getattr(error, "orig", None) or error).strip()


def friendly_errors(command: Callable) -> Callable:
    """Show input errors as one line (`error: ...`, exit status 2) instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except user_error_types() as error:
            err.print(f"[bold red]error[/]: {escape(error_message(error))}", markup=True, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper
