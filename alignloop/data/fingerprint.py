"""A content hash of a dataset, stored in every run directory.

Two runs trained on "the same data" should be able to prove it, and a silently edited file
should show up as a different hash. The hash covers the validated records, not the file bytes:
the same pairs read from JSONL, CSV or Parquet hash the same, while any change to a record, or
to their order (which changes batches and held-out splits), changes the hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

__all__ = ["dataset_fingerprint", "canonical_json"]


def canonical_json(record: BaseModel | Mapping[str, Any]) -> str:
    """One record as JSON with sorted keys and no whitespace, tagged with its record type.

    The type tag keeps a prompt-only record from hashing like a different record type with the
    same fields; absent optional fields are written as null so that "absent" has one spelling.
    """
    if isinstance(record, BaseModel):
        tagged = {"type": type(record).__name__, "fields": record.model_dump(mode="json")}
    else:
        tagged = {"type": "mapping", "fields": dict(record)}
    return json.dumps(tagged, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dataset_fingerprint(records: Iterable[BaseModel | Mapping[str, Any]]) -> str:
    """sha256 hex digest over the canonical JSON of each record, one per line, in order."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(canonical_json(record).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()
