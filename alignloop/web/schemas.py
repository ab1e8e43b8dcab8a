"""Request bodies and parameters, bounded to what the database columns hold, and the JSON views
of stored rows shared by pages and API.

Every number and string a request carries has a bound here (ids and offsets fit PostgreSQL's
integer, names their columns, `min_seconds` is finite), and every string in a JSON body is
checked for what no database stores (`alignloop.data.storable`), so bad input gets a 422 that
names the field instead of a 500 from the database.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.datastructures import FormData

from alignloop.data.storable import find_unstorable
from alignloop.feedback import security, service
from alignloop.feedback.assignment import MAX_TEXT_CHARS, rubric_axes
from alignloop.feedback.models import Assignment, Campaign, Judgement, TaskType

__all__ = [
    "Id", "QueryId", "Limit", "Offset", "JudgementIn", "CampaignIn", "ItemsIn", "task_view", "judgement_view", "campaign_view",
    "form_answer", "MAX_IMPORT_ROWS", "MAX_PAGE",
]

MAX_IMPORT_ROWS = 100_000
MAX_PAGE = 10_000  # judgements per listing

Id = Annotated[int, Path(ge=1, le=service.MAX_ID, description="a row id")]
QueryId = Annotated[int, Query(ge=1, le=service.MAX_ID, description="a row id")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"at most {MAX_PAGE}")]
Offset = Annotated[int, Query(ge=0, le=service.MAX_ID)]


class _Body(BaseModel):
    """A JSON body with no unknown fields and only storable text, however deeply nested."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        if problem := find_unstorable(data, "body"):
            raise ValueError(problem)
        return data


class JudgementIn(_Body):
    answer: dict[str, Any] = Field(description="in candidate ids, as `Judgement.answer`; pairwise takes choice a|b|tie|both_bad")
    comment: str = Field("", max_length=MAX_TEXT_CHARS)
    client_key: str | None = Field(None, min_length=1, max_length=64,
                                   description="idempotency key: a retry returns the stored judgement")


class CampaignIn(_Body):
    name: str = Field(min_length=1, max_length=service.MAX_NAME_CHARS)
    task_types: list[TaskType] = Field(min_length=1, max_length=len(TaskType))
    overlap: int = Field(3, ge=1, le=service.MAX_OVERLAP)
    rubric_axes: list[Annotated[str, Field(max_length=service.MAX_AXIS_CHARS)]] = Field([], max_length=service.MAX_AXES)
    scale_min: int = Field(1, ge=-service.SCALE_LIMIT, le=service.SCALE_LIMIT)
    scale_max: int = Field(7, ge=-service.SCALE_LIMIT, le=service.SCALE_LIMIT)
    guidelines: str = Field("", max_length=MAX_TEXT_CHARS)
    min_seconds: float = Field(3.0, ge=0, le=service.MAX_MIN_SECONDS, allow_inf_nan=False)


class ItemsIn(_Body):
    rows: list[Any] = Field(max_length=MAX_IMPORT_ROWS,
                            description="prompt rows or candidate rows, as in an import file (see alignloop.feedback.imports)")


def task_view(assignment: Assignment) -> dict[str, Any]:
    """What an evaluator needs to answer an assignment, candidates in the order shown."""
    item, campaign = assignment.item, assignment.item.campaign
    texts = {candidate.id: candidate.text for candidate in item.candidates}
    return {
        "assignment_id": assignment.id, "campaign_id": campaign.id, "campaign": campaign.name,
        "task_type": assignment.task_type.value, "status": assignment.status.value, "prompt": item.prompt,
        "candidates": [{"id": cid, "label": chr(ord("A") + i), "text": texts[cid]} for i, cid in enumerate(assignment.shown_order)],
        "rubric_axes": rubric_axes(campaign.rubric_axes), "scale_min": campaign.scale_min, "scale_max": campaign.scale_max,
    }


def judgement_view(judgement: Judgement) -> dict[str, Any]:
    return {
        "id": judgement.id, "assignment_id": judgement.assignment_id, "campaign_id": judgement.campaign_id,
        "item_id": judgement.item_id, "evaluator_id": judgement.evaluator_id, "task_type": judgement.task_type.value,
        "answer": judgement.answer, "shown_order": judgement.shown_order, "comment": judgement.comment,
        "submitted_at": security.as_utc(judgement.submitted_at).isoformat(), "duration_ms": judgement.duration_ms,
        "client_key": judgement.client_key, "via": judgement.via,
    }


def campaign_view(campaign: Campaign) -> dict[str, Any]:
    return {
        "id": campaign.id, "name": campaign.name, "task_types": campaign.task_types, "overlap": campaign.overlap,
        "rubric_axes": campaign.rubric_axes, "scale_min": campaign.scale_min, "scale_max": campaign.scale_max,
        "guidelines": campaign.guidelines,
    }


def form_answer(task_type: str, form: FormData) -> dict[str, Any]:
    """A task form's fields in the shape `validate_answer` checks (which names the bad field)."""
    if task_type == "pairwise":
        return {"choice": form.get("choice"), "strength": form.get("strength") or None}
    if task_type == "ranking":
        return {"ranks": {key[len("rank_"):]: value for key, value in form.items() if key.startswith("rank_")}}
    if task_type == "rating":
        return {"scores": {key[len("score_"):]: value for key, value in form.items() if key.startswith("score_")}}
    if task_type == "edit":
        candidate = form.get("candidate_id") or None
        return {"text": form.get("text", ""), "candidate_id": int(candidate) if str(candidate).isascii() and str(candidate).isdigit() else candidate}
    return {"text": form.get("text", "")}
