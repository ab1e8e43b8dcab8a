"""The one error type of the data layer, and a collector that reports several problems at once.

A user fixing a dataset by hand should see every bad line of a file in one run, not one per run,
so readers feed each problem to an `ErrorCollector` and raise once at the end of the file. Every
message starts with where the problem is (`pairs.jsonl:17:`), so it reads like a compiler
diagnostic and editors can jump to it.
"""

from __future__ import annotations

from alignloop.errors import UserError

__all__ = ["DataError", "ErrorCollector", "MAX_REPORTED_ERRORS"]

MAX_REPORTED_ERRORS = 10


class DataError(ValueError, UserError):
    """A dataset that cannot be used as it is: the message says where and what was expected."""


class ErrorCollector:
    """Gathers located error messages; `raise_if_any` raises one `DataError` listing them.

    Messages past the first `limit` are only counted, so a file with a million bad lines still
    produces a short report ("... and 999990 more errors").
    """

    def __init__(self, limit: int = MAX_REPORTED_ERRORS):
        self.limit = limit
        self.messages: list[str] = []
        self.total = 0

    def add(self, message: str) -> None:
        self.total += 1
        if len(self.messages) < self.limit:
            self.messages.append(message)

    def raise_if_any(self, heading: str | None = None) -> None:
        if not self.total:
            return
        lines = ([heading] if heading else []) + self.messages
        hidden = self.total - len(self.messages)
        if hidden:
            lines.append(f"... and {hidden} more error{'s' if hidden != 1 else ''}")
        raise DataError("\n".join(lines))
