"""Text that every store can hold: no NUL character, no lone surrogate.

PostgreSQL's text columns refuse U+0000 (SQLite keeps it, so the two databases would disagree),
and a lone surrogate (U+D800..U+DFFF without its pair, which JSON's "\\udfff" escape can carry)
has no UTF-8 encoding: it is stored, but every page, export or tokenizer that later encodes it
fails. Refusing both where text comes in keeps one bad string from poisoning a campaign.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["unstorable_reason", "find_unstorable"]

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_reason(text: str) -> str | None:
    """Why `text` cannot be stored, or None when it can."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    code = ord(found.group())
    what = "a NUL character (U+0000)" if code == 0 else f"a lone surrogate (U+{code:04X}), which UTF-8 cannot encode"
    return f"contains {what} at character {found.start()}"


def find_unstorable(value: Any, path: str) -> str | None:
    """'path: why' for the first unstorable string in a JSON value (keys included), else None."""
    if isinstance(value, str):
        reason = unstorable_reason(value)
        return f"{path}: {reason}" if reason else None
    if isinstance(value, dict):
        for key, item in value.items():
            # A bad key is reported without itself in the path: printing it would fail too.
            if problem := find_unstorable(key, f"{path} (a key)") or find_unstorable(item, f"{path}.{key}"):
                return problem
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if problem := find_unstorable(item, f"{path}[{index}]"):
                return problem
    return None
