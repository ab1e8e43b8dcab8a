"""Which item an evaluator sees next, in which order, and whether an answer is acceptable.

Pure functions over plain values (no database), so the rules can be read and tested alone:

* `pick_item`: among the items this evaluator has not seen for the task type, a gold item with
  probability `gold_rate` (gold items have a known answer and are shown to everyone, to measure
  accuracy), otherwise a regular item with fewer than `overlap` evaluators, the least covered
  first so that every item gets its first judgements before any gets its last.
* `display_order`: the candidates on screen, randomised, because people favour the first
  position; the order is stored with the judgement so position bias can be measured.
* `validate_answer`: the answer in the shape `Judgement.answer` documents, always in candidate
  ids (never screen positions), or an `InvalidAnswer` saying what was expected.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from alignloop.data.storable import unstorable_reason
from alignloop.errors import UserError
from alignloop.feedback.models import TaskType

__all__ = [
    "MAX_TEXT_CHARS", "MIN_CANDIDATES", "PAIRWISE_CHOICES", "DEFAULT_AXIS", "InvalidAnswer", "ItemLoad",
    "pick_item", "display_order", "rubric_axes", "validate_answer", "check_text",
]

MAX_TEXT_CHARS = 20_000  # prompts, responses, comments and edits alike
MIN_CANDIDATES = {TaskType.pairwise: 2, TaskType.ranking: 2, TaskType.rating: 1, TaskType.comment: 0, TaskType.edit: 0}
PAIRWISE_CHOICES = ("a", "b", "tie", "both_bad")
DEFAULT_AXIS = "overall"  # the one axis of a rating campaign that names none


class InvalidAnswer(ValueError, UserError):
    """An answer that does not fit its task: the message says which field and what was expected."""


@dataclass(frozen=True)
class ItemLoad:
    """An item as assignment sees it: how many candidates it has and how many evaluators hold it."""

    item_id: int
    is_gold: bool
    candidates: int
    taken: int  # judgements plus assignments still open


def pick_item(
    loads: list[ItemLoad], task_type: TaskType, overlap: int, rng: random.Random, gold_rate: float
) -> ItemLoad | None:
    """The next item for one evaluator; `loads` must already exclude the items they have seen."""
    usable = [load for load in loads if load.candidates >= MIN_CANDIDATES[task_type]]
    gold = [load for load in usable if load.is_gold]
    regular = [load for load in usable if not load.is_gold and load.taken < overlap]
    if gold and (not regular or rng.random() < gold_rate):
        return rng.choice(gold)
    if not regular:
        return None
    least = min(load.taken for load in regular)
    return rng.choice([load for load in regular if load.taken == least])


def display_order(task_type: TaskType, candidate_ids: tuple[int, ...], rng: random.Random) -> list[int]:
    """Candidate ids left to right (top to bottom) as the evaluator will see them."""
    if task_type == TaskType.pairwise:
        return rng.sample(list(candidate_ids), 2)
    if task_type in (TaskType.rating, TaskType.edit):
        return [rng.choice(candidate_ids)] if candidate_ids else []
    return rng.sample(list(candidate_ids), len(candidate_ids))  # ranking, comment: all of them


def rubric_axes(axes: list[str]) -> list[str]:
    return list(axes) or [DEFAULT_AXIS]


def _whole_number(value: Any, field: str, low: int, high: int) -> int:
    # ASCII digits only: Python's int() also reads "١" (Arabic-Indic one) and "１" (full width).
    as_text = value.strip() if isinstance(value, str) else ""
    if isinstance(value, bool) or not (isinstance(value, int) or (as_text.isascii() and as_text.lstrip("-").isdigit())):
        raise InvalidAnswer(f"{field}: expected a whole number from {low} to {high}, got {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise InvalidAnswer(f"{field}: expected a whole number from {low} to {high}, got {number}")
    return number


def check_text(value: Any, field: str, limit: int = MAX_TEXT_CHARS, required: bool = False) -> str:
    """`value` as text the store can hold (at most `limit` characters), or InvalidAnswer naming `field`."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidAnswer(f"{field}: expected text, got {type(value).__name__}")
    if reason := unstorable_reason(value):
        raise InvalidAnswer(f"{field}: {reason}")
    if required and not value.strip():
        raise InvalidAnswer(f"{field}: expected non-empty text")
    if len(value) > limit:
        raise InvalidAnswer(f"{field}: {len(value)} characters, more than the limit of {limit}")
    return value


def _pairwise(raw: dict[str, Any], shown: list[int]) -> dict[str, Any]:
    choice = raw.get("choice")
    if choice not in PAIRWISE_CHOICES:
        raise InvalidAnswer(f"choice: expected one of {', '.join(PAIRWISE_CHOICES)}, got {choice!r}")
    better = {"a": shown[0], "b": shown[1]}.get(choice)
    if raw.get("better") is not None and raw["better"] != better:
        raise InvalidAnswer(f"better: candidate {raw['better']!r} does not match choice {choice!r} (shown {shown})")
    strength = raw.get("strength")
    if better is None or strength in (None, ""):
        strength = None  # a tie or "both bad" has no strength
    else:
        strength = _whole_number(strength, "strength", 1, 3)
    return {"choice": choice, "better": better, "strength": strength}


def _ranking(raw: dict[str, Any], shown: list[int]) -> dict[str, Any]:
    ranks = raw.get("ranks")
    if not isinstance(ranks, dict):
        raise InvalidAnswer("ranks: expected an object mapping each shown candidate id to its rank")
    given = {str(key) for key in ranks}
    expected = {str(candidate) for candidate in shown}
    if given != expected:
        raise InvalidAnswer(f"ranks: expected a rank for exactly the shown candidates {sorted(shown)}, got {sorted(given)}")
    checked = {str(key): _whole_number(value, f"ranks.{key}", 1, len(shown)) for key, value in ranks.items()}
    if 1 not in checked.values():
        raise InvalidAnswer(f"ranks: expected rank 1 for the best candidate (ties share a rank), got {sorted(checked.values())}")
    return {"ranks": checked}


def _rating(raw: dict[str, Any], axes: list[str], scale: tuple[int, int]) -> dict[str, Any]:
    scores = raw.get("scores")
    if not isinstance(scores, dict) or set(scores) != set(axes):
        got = sorted(scores) if isinstance(scores, dict) else scores
        raise InvalidAnswer(f"scores: expected a score for each rubric axis {axes}, got {got!r}")
    return {"scores": {axis: _whole_number(scores[axis], f"scores.{axis}", *scale) for axis in axes}}


def _edit(raw: dict[str, Any], shown: list[int]) -> dict[str, Any]:
    candidate_id = raw.get("candidate_id", shown[0] if shown else None)
    if candidate_id not in (shown[0] if shown else None, None):
        raise InvalidAnswer(f"candidate_id: expected the shown candidate {shown[0] if shown else None}, got {candidate_id!r}")
    return {"candidate_id": candidate_id, "text": check_text(raw.get("text"), "text", required=True)}


def validate_answer(
    task_type: TaskType, raw: Any, shown: list[int], axes: list[str], scale: tuple[int, int]
) -> dict[str, Any]:
    """`raw` checked and normalised into the stored `Judgement.answer` shape."""
    if not isinstance(raw, dict):
        raise InvalidAnswer(f"answer: expected an object, got {type(raw).__name__}")
    if task_type == TaskType.pairwise:
        return _pairwise(raw, shown)
    if task_type == TaskType.ranking:
        return _ranking(raw, shown)
    if task_type == TaskType.rating:
        return _rating(raw, rubric_axes(axes), scale)
    if task_type == TaskType.comment:
        return {"text": check_text(raw.get("text"), "text", required=True)}
    return _edit(raw, shown)
