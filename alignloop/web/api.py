"""The REST API under /api/v1, for evaluator clients (scripted annotators, labelling tools) and
admin automation. Bearer API tokens only (see auth.py); documented at /docs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from sqlalchemy.orm import Session

from alignloop.feedback import imports, service
from alignloop.feedback.models import Assignment, TaskType, User
from alignloop.web.auth import api_admin, api_user, store
from alignloop.web.schemas import (
    CampaignIn, Id, ItemsIn, QueryId, JudgementIn, Limit, Offset, campaign_view, judgement_view, task_view,
)
from alignloop.web.store import WebStore

__all__ = ["router"]

class Problem(BaseModel):
    """Why a request was refused: a sentence, or for a malformed request pydantic's list of
    {loc, msg, type} naming each bad field."""

    detail: str | list[dict[str, Any]]


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


def _no_unknown_query_parameters(request: Request) -> None:
    """A misspelt query parameter is refused (422) instead of silently ignored, as unknown body
    fields are (`extra="forbid"`): `?campain_id=3` must not list every campaign's judgements."""
    route = request.scope.get("route")
    known = _query_names(route.dependant) if route else set()
    unknown = [name for name in request.query_params if name not in known]
    if unknown:
        raise RequestValidationError([{"loc": ("query", name), "msg": "unknown query parameter", "type": "extra_forbidden"}
                                      for name in unknown])


def _query_names(dependant) -> set[str]:
    """The query parameters a route takes, its dependencies' included."""
    return {param.alias for param in dependant.query_params}.union(*(_query_names(d) for d in dependant.dependencies))


# Every refusal any route can give, documented once (schema-driven clients and the fuzz tests
# read these): the route-specific success codes are on each route.
router = APIRouter(prefix="/api/v1", dependencies=[Depends(_no_unknown_query_parameters)], responses={
    400: _problem("the body is not JSON"), 401: _problem("missing or invalid API token"), 403: _problem("not yours, or admins only"),
    404: _problem("no such campaign, assignment or user"), 409: _problem("conflicts with what is stored"),
    413: _problem("request body too large"), 422: _problem("invalid input; the detail names the field"),
})


@router.get("/campaigns", tags=["evaluators"])
def api_campaigns(user: User = Depends(api_user), web: WebStore = Depends(store)) -> list[dict[str, Any]]:
    """Every campaign, with whether you acknowledged its guidelines and how many judgements you gave."""
    return web.read(lambda s: [
        {**campaign_view(row["campaign"]), "guidelines_acknowledged": row["read"], "done": row["done"]}
        for row in service.evaluator_campaigns(s, user)
    ])


@router.post("/campaigns/{campaign_id}/acknowledge", tags=["evaluators"], status_code=204)
def api_acknowledge(campaign_id: Id, user: User = Depends(api_user), web: WebStore = Depends(store)) -> Response:
    """Confirm you have read the campaign's guidelines (needed before the first task)."""
    web.write(lambda s: service.acknowledge_guidelines(s, user, campaign_id))
    return Response(status_code=204)


@router.post("/campaigns/{campaign_id}/next", tags=["evaluators"], responses={204: {"description": "nothing left"}})
def api_next(campaign_id: Id, task_type: TaskType | None = None, user: User = Depends(api_user),
             web: WebStore = Depends(store)):
    """Your open assignment in the campaign, or a new one; 204 when there is nothing left for you."""
    def assign(session: Session) -> dict[str, Any] | None:
        assignment = service.next_assignment(session, campaign_id, user, task_type, seed=web.assignment_seed)
        return None if assignment is None else task_view(assignment)

    view = web.write(assign)
    return Response(status_code=204) if view is None else view


def _own_assignment(session: Session, assignment_id: int, user: User) -> Assignment:
    """Over the API even an admin reads only their own assignments: the API acts as one evaluator."""
    assignment = service.assignment_for(session, assignment_id, user)
    if assignment.evaluator_id != user.id:
        raise service.Forbidden(f"assignment {assignment_id} belongs to another evaluator")
    return assignment


@router.get("/assignments/{assignment_id}", tags=["evaluators"])
def api_assignment(assignment_id: Id, user: User = Depends(api_user), web: WebStore = Depends(store)) -> dict[str, Any]:
    """One of your assignments (403 for another evaluator's)."""
    return web.read(lambda s: task_view(_own_assignment(s, assignment_id, user)))


@router.post("/assignments/{assignment_id}/judgement", tags=["evaluators"], status_code=201)
def api_submit(assignment_id: Id, body: JudgementIn, response: Response, user: User = Depends(api_user),
               web: WebStore = Depends(store)) -> dict[str, Any]:
    """Answer an assignment. 201 when stored; 200 with the stored judgement when `client_key` was seen before."""
    judgement, created = web.write(lambda s: service.submit_judgement(
        s, assignment_id, user, body.answer, comment=body.comment, client_key=body.client_key, via="api"))
    response.status_code = 201 if created else 200
    return judgement_view(judgement)


@router.get("/judgements/mine", tags=["evaluators"])
def api_my_judgements(campaign_id: QueryId | None = None, limit: Limit = 1000, offset: Offset = 0,
                      user: User = Depends(api_user), web: WebStore = Depends(store)) -> list[dict[str, Any]]:
    return web.read(lambda s: [judgement_view(j) for j in service.list_judgements(
        s, campaign_id=campaign_id, evaluator_id=user.id, limit=limit, offset=offset)])


@router.post("/campaigns", tags=["admins"], status_code=201)
def api_create_campaign(body: CampaignIn, user: User = Depends(api_admin), web: WebStore = Depends(store)) -> dict[str, Any]:
    return web.write(lambda s: campaign_view(service.create_campaign(
        s, body.name, [t.value for t in body.task_types], overlap=body.overlap, rubric_axes=body.rubric_axes,
        scale_min=body.scale_min, scale_max=body.scale_max, guidelines=body.guidelines,
        min_seconds=body.min_seconds, created_by=user)))


@router.post("/campaigns/{campaign_id}/items", tags=["admins"], status_code=201)
def api_import(campaign_id: Id, body: ItemsIn, user: User = Depends(api_admin), web: WebStore = Depends(store)) -> dict[str, int]:
    """Import prompt rows or candidate rows; all or nothing (422 names every bad row)."""
    result = web.write(lambda s: imports.import_records(s, service.get_campaign(s, campaign_id), body.rows))
    return {"items": result.items, "candidates": result.candidates}


@router.get("/campaigns/{campaign_id}/judgements", tags=["admins"])
def api_judgements(campaign_id: Id, limit: Limit = 1000, offset: Offset = 0,
                   user: User = Depends(api_admin), web: WebStore = Depends(store)) -> list[dict[str, Any]]:
    return web.read(lambda s: [judgement_view(j) for j in service.list_judgements(
        s, campaign_id=campaign_id, limit=limit, offset=offset)])

