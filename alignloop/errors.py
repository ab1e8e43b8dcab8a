"""The one base class of errors caused by what a person gave: a recipe, a data file, a model
name, a folder to resume, a database URL, a campaign name.

The command line shows a `UserError` as one line (`error: ...`, exit status 2), never a
traceback, and every other exception as the bug it is. Each layer keeps its own error class
(`ConfigError`, `DataError`, `ModelLoadError`, ...) with its usual built-in base as well, so
code that catches `ValueError` or `LookupError` is unchanged; this module imports nothing, so
the lightest command can name the base without loading the layers that raise.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Input that cannot be used as given: the message says where (file, key, name) and what was expected."""
