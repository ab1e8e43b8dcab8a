"""Deterministic train / held-out splits that need no random seed.

A held-out split must be the same on every machine and every rerun, and it must not change
when records are appended to the end of a file (the earlier split stays valid). Taking every
n-th record, or spreading a fraction evenly over the file, has both properties; a shuffled split
has neither unless the seed and the file are both frozen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import TypeVar

__all__ = ["split_every_nth", "split_by_fraction"]

T = TypeVar("T")


def split_every_nth(records: Sequence[T], n: int = 5) -> tuple[list[T], list[T]]:
    """(train, held_out): the n-th, 2n-th, ... records (1-based) are held out, the rest train."""
    if n < 2:
        raise ValueError(f"n must be at least 2 (every n-th record is held out), got {n}")
    train = [record for index, record in enumerate(records) if (index + 1) % n]
    held_out = [record for index, record in enumerate(records) if not (index + 1) % n]
    return train, held_out


def split_by_fraction(records: Sequence[T], fraction: float) -> tuple[list[T], list[T]]:
    """(train, held_out) with floor(len * fraction) records held out, spread evenly over the file.

    Record i is held out when floor((i + 1) * fraction) > floor(i * fraction); for fraction
    1/n that is exactly `split_every_nth(records, n)`.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    # Exact decimal arithmetic: in floats 100 * 0.29 is 28.999..., which would move a record
    # across the split depending on how the fraction was written.
    exact = Fraction(repr(fraction))
    train: list[T] = []
    held_out: list[T] = []
    for index, record in enumerate(records):
        crosses = math.floor((index + 1) * exact) > math.floor(index * exact)
        (held_out if crosses else train).append(record)
    return train, held_out
