"""From `metrics.jsonl` records to the report's per-step charts and final-metrics table.

A run logs many metrics; the report charts the ones that tell whether training worked (loss,
reward, KL, preference accuracy and margins) plus every held-out `eval/*` metric, each beside its
training counterpart when there is one. A loop's rounds are laid end to end on one step axis, each
round starting where the previous one ended, with the round boundaries marked.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from alignloop.report.plots import Panel, Series

# Metrics charted whenever they were logged (names without the `eval/` prefix; "loss" is train/loss).
PRIMARY_METRICS = ("loss", "reward", "kl/sequence", "rewards/accuracies", "rewards/margins")
_BOOKKEEPING = ("step", "time")


def number(value: Any) -> Optional[float]:
    """A metric value as a float: numbers, and the "nan" / "inf" strings the metrics logger writes
    for non-finite values; anything else is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "+inf", "-inf", "infinity", "-infinity"):
        return float(value)
    return None


def metric_names(records: Sequence[dict[str, Any]]) -> list[str]:
    """Every metric name in order of first appearance (step and time left out)."""
    names: dict[str, None] = {}
    for record in records:
        names.update((key, None) for key in record if key not in _BOOKKEEPING)
    return list(names)


def train_name(base: str) -> str:
    return "train/loss" if base == "loss" else base


def default_bases(records: Sequence[dict[str, Any]]) -> list[str]:
    """The primary metrics, then the base name of every other `eval/*` metric."""
    others = [name[len("eval/"):] for name in metric_names(records) if name.startswith("eval/")]
    others = [base for base in others if base not in PRIMARY_METRICS]
    return list(PRIMARY_METRICS) + others


def series_of(records: Sequence[dict[str, Any]], name: str, label: str) -> Optional[Series]:
    """The finite values of metric `name` by step, or None when it has none."""
    points = [(record["step"], number(record.get(name))) for record in records if name in record]
    points = [(step, value) for step, value in points if value is not None and math.isfinite(value)]
    if not points:
        return None
    return Series(label, tuple(float(step) for step, _ in points), tuple(value for _, value in points))


def step_panels(records: Sequence[dict[str, Any]], bases: Optional[Sequence[str]] = None,
                boundaries: tuple[tuple[float, str], ...] = (), prefix: str = "") -> list[Panel]:
    """One panel per metric base name that has data: its training series and its `eval/` series."""
    panels = []
    for base in bases if bases is not None else default_bases(records):
        candidates = (series_of(records, train_name(base), "train"), series_of(records, f"eval/{base}", "held-out eval"))
        present = tuple(series for series in candidates if series is not None)
        if present:
            panels.append(Panel(prefix + base, present, boundaries=boundaries))
    return panels


def final_metrics(records: Sequence[dict[str, Any]]) -> list[tuple[str, int, Any]]:
    """(name, step, value) of the last logged value of every metric, sorted by name."""
    last: dict[str, tuple[int, Any]] = {}
    for record in records:
        for name in metric_names([record]):
            last[name] = (record["step"], record[name])
    return [(name, step, value) for name, (step, value) in sorted(last.items())]


def concatenate_rounds(rounds: Sequence[tuple[int, Sequence[dict[str, Any]]]]
                       ) -> tuple[list[dict[str, Any]], tuple[tuple[float, str], ...]]:
    """Records of several rounds on one step axis, and where each round starts.

    Each round's steps are shifted by the last step of the rounds before it, so a round's step-0
    evaluation sits where the previous round's policy ended.
    """
    combined: list[dict[str, Any]] = []
    boundaries = []
    offset = 0
    for round_number, records in rounds:
        if not records:
            continue
        boundaries.append((float(offset), f"round {round_number}"))
        combined.extend({**record, "step": record["step"] + offset} for record in records)
        offset += max(record["step"] for record in records)
    return combined, tuple(boundaries)
