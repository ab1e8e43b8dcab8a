"""The feedback web app: server-rendered pages for evaluators and admins, and a REST API.

`create_app(db_url)` builds a FastAPI app over one database. Two ways in, never mixed:

* pages (`/signin`, `/home`, `/tasks/...`, `/admin/...`) use a session cookie (HttpOnly,
  SameSite=Lax) and a per-session CSRF token that every state-changing form carries; a POST
  without a session gets 401, with a missing or forged token 403. The sign-in form, before
  there is a session, carries a double-submit token (cookie + field).
* the REST API (`/api/v1/...`, documented at `/docs`) uses bearer API tokens and no cookies, so
  a browser cannot be tricked into calling it; no CSRF token is needed there.

A request's work is one short transaction (`database.transaction`, after a separate one that
checks its credentials); service errors map to status codes in one place (`_STATUS`). Everything a user supplied is rendered by Jinja2 with
autoescaping on, and a Content-Security-Policy without inline scripts backs that up: a
`<script>` inside a prompt is shown as text and could not run even if it were not escaped.
Route handlers are plain `def`, so FastAPI runs them in its thread pool and a slow database
call does not stall the event loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from fastapi import Depends, FastAPI, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from alignloop.data.errors import DataError
from alignloop.feedback import imports, security, service
from alignloop.feedback.assignment import InvalidAnswer, rubric_axes
from alignloop.feedback.database import make_engine, make_session_factory, transaction
from alignloop.feedback.models import Assignment, Campaign, Judgement, Role, TaskType, User

__all__ = ["create_app", "app_from_environment", "SESSION_COOKIE", "DB_URL_VARIABLE"]

SESSION_COOKIE = "alignloop_session"
SIGNIN_CSRF_COOKIE = "alignloop_signin_csrf"
DB_URL_VARIABLE = "ALIGNLOOP_FEEDBACK_DB"  # read by `app_from_environment` in each uvicorn worker
HERE = Path(__file__).parent
T = TypeVar("T")

_STATUS: dict[type[Exception], int] = {
    service.NotFound: 404, service.Forbidden: 403, service.Conflict: 409, service.InvalidRequest: 422,
    InvalidAnswer: 422, DataError: 422,
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
_bearer = HTTPBearer(auto_error=False, description="an API token from `alignloop feedback token NAME`")


class SecurityHeaders:
    """Adds `_SECURITY_HEADERS` (and no-store on dynamic pages) to every response. A plain ASGI
    middleware, cheaper per request than Starlette's `@app.middleware("http")`, which runs every
    response through an extra task and stream."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = [(name.lower().encode(), value.encode()) for name, value in _SECURITY_HEADERS.items()]
        if not scope["path"].startswith(("/static", "/docs", "/openapi.json")):
            extra.append((b"cache-control", b"no-store"))

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class SignInRequired(Exception):
    """No (valid) credentials; pages redirect GETs to the sign-in page, everything else gets 401."""


# ---------------------------------------------------------------- API bodies


class JudgementIn(BaseModel):
    answer: dict[str, Any] = Field(description="in candidate ids, as `Judgement.answer`; pairwise takes choice a|b|tie|both_bad")
    comment: str = ""
    client_key: str | None = Field(None, max_length=64, description="idempotency key: a retry returns the stored judgement")


class CampaignIn(BaseModel):
    name: str
    task_types: list[TaskType]
    overlap: int = 3
    rubric_axes: list[str] = []
    scale_min: int = 1
    scale_max: int = 7
    guidelines: str = ""
    min_seconds: float = 3.0


class ItemsIn(BaseModel):
    rows: list[Any] = Field(description="prompt rows or candidate rows, as in an import file (see alignloop.feedback.imports)")


# ---------------------------------------------------------------- views shared by pages and API


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
        return {"text": form.get("text", ""), "candidate_id": int(candidate) if str(candidate).isdigit() else candidate}
    return {"text": form.get("text", "")}


# ---------------------------------------------------------------- the app


def _templates() -> Jinja2Templates:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
    )
    return Jinja2Templates(env=environment)


def create_app(db_url: str, assignment_seed: int | None = None) -> FastAPI:
    """The app over an already upgraded database (`database.upgrade(db_url)` first).

    `assignment_seed` makes the choice of items and display orders reproducible (simulations
    with scripted annotators, `service.assignment_rng`); people's servers leave it unseeded.
    """
    app = FastAPI(title="alignloop feedback", version="1", docs_url="/docs", redoc_url=None)
    factory = make_session_factory(make_engine(db_url))
    templates = _templates()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def atomic(work: Callable[[Session], T], attempts: int = 3) -> T:
        """Run `work` in one transaction; retry when a concurrent request won a race (a unique
        constraint, or a PostgreSQL deadlock). Every unit of work is safe to repeat: a judgement
        by its client key, an assignment by resuming the open one."""
        for attempt in range(attempts):
            try:
                with transaction(factory) as session:
                    return work(session)
            except (IntegrityError, OperationalError):
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("user", getattr(request.state, "user", None))
        context.setdefault("csrf_token", getattr(request.state, "csrf_token", ""))
        return templates.TemplateResponse(request, name, context, status_code=status)

    app.add_middleware(SecurityHeaders)

    def _is_api(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    @app.exception_handler(SignInRequired)
    def _sign_in_required(request: Request, error: SignInRequired):
        if _is_api(request):
            return JSONResponse({"detail": str(error)}, 401, headers={"WWW-Authenticate": "Bearer"})
        if request.method == "GET":
            return RedirectResponse("/signin", 303)
        return HTMLResponse("sign in first", 401)

    for error_type, status in _STATUS.items():
        def _handler(request: Request, error: Exception, status: int = status):
            if _is_api(request):
                return JSONResponse({"detail": str(error)}, status)
            return render(request, "error.html", status, code=status, message=str(error))
        app.add_exception_handler(error_type, _handler)

    # ------------------------------------------------------------ authentication

    def api_user(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> User:
        token = credentials.credentials if credentials else None
        user = atomic(lambda s: security.user_for_api_token(s, token))
        if user is None:
            raise SignInRequired("missing or invalid API token (send Authorization: Bearer <token>)")
        return user

    def api_admin(user: User = Depends(api_user)) -> User:
        if user.role != Role.admin:
            raise service.Forbidden("admins only")
        return user

    def page_user(request: Request) -> User:
        web_session = atomic(lambda s: security.web_session_for(s, request.cookies.get(SESSION_COOKIE)))
        if web_session is None:
            raise SignInRequired("sign in first")
        request.state.user, request.state.csrf_token = web_session.user, web_session.csrf_token
        return web_session.user

    async def page_form(request: Request, user: User = Depends(page_user)) -> FormData:
        """The posted form of a signed-in user, after its CSRF token was checked."""
        form = await request.form()
        token = form.get("csrf_token")
        if not security.csrf_matches(request.state.csrf_token, token if isinstance(token, str) else None):
            raise service.Forbidden("missing or invalid CSRF token; reload the page and try again")
        return form

    def page_admin(user: User = Depends(page_user)) -> User:
        if user.role != Role.admin:
            raise service.Forbidden("admins only")
        return user

    # ------------------------------------------------------------ sign in / out, health

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        atomic(lambda s: s.execute(Campaign.__table__.select().limit(1)).all())
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def root(request: Request):
        return RedirectResponse("/home", 303)

    def _signin_form(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
        # No session yet, so the sign-in form's CSRF token is a double-submit cookie: a page on
        # another site can post the form but cannot read or set the cookie to match it.
        token = request.cookies.get(SIGNIN_CSRF_COOKIE) or security.new_secret()
        response = render(request, "signin.html", status, error=error, csrf_token=token)
        response.set_cookie(SIGNIN_CSRF_COOKIE, token, httponly=True, samesite="lax", secure=request.url.scheme == "https")
        return response

    @app.get("/signin", response_class=HTMLResponse, include_in_schema=False)
    def signin_page(request: Request):
        return _signin_form(request)

    @app.post("/signin", include_in_schema=False)
    def signin(request: Request, username: str = Form(""), password: str = Form(""), csrf_token: str = Form("")):
        expected = request.cookies.get(SIGNIN_CSRF_COOKIE)
        if not expected or not security.csrf_matches(expected, csrf_token):
            return _signin_form(request, 403, "the sign-in form expired; please try again")
        client = request.client.host if request.client else "unknown"
        with factory() as session:
            try:
                user = security.sign_in(session, username, password, client)
            except security.SignInFailed as error:
                session.commit()  # keep the failed attempt: it counts towards the rate limit
                return _signin_form(request, 401, str(error))
            except security.SignInRateLimited as error:
                return _signin_form(request, 429, str(error))
            secret, _ = security.start_web_session(session, user)
            session.commit()
        response = RedirectResponse("/admin" if user.role == Role.admin else "/home", 303)
        response.set_cookie(SESSION_COOKIE, secret, httponly=True, samesite="lax", secure=request.url.scheme == "https",
                            max_age=int(security.SESSION_LIFETIME.total_seconds()))
        response.delete_cookie(SIGNIN_CSRF_COOKIE)
        return response

    @app.post("/signout", include_in_schema=False)
    def signout(request: Request, form: FormData = Depends(page_form)):
        atomic(lambda s: security.end_web_session(s, request.cookies.get(SESSION_COOKIE)))
        response = RedirectResponse("/signin", 303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # ------------------------------------------------------------ evaluator pages

    def _home_rows(session: Session, user: User) -> list[dict[str, Any]]:
        return [
            {"campaign": c, "done": service.evaluator_done_count(session, c.id, user.id),
             "read": service.has_read_guidelines(session, user.id, c.id)}
            for c in service.list_campaigns(session)
        ]

    @app.get("/home", response_class=HTMLResponse, include_in_schema=False)
    def home(request: Request, user: User = Depends(page_user)):
        return render(request, "home.html", rows=atomic(lambda s: _home_rows(s, user)))

    @app.get("/campaigns/{campaign_id}/guidelines", response_class=HTMLResponse, include_in_schema=False)
    def guidelines(request: Request, campaign_id: int, user: User = Depends(page_user)):
        campaign = atomic(lambda s: service.get_campaign(s, campaign_id))
        return render(request, "guidelines.html", campaign=campaign)

    @app.post("/campaigns/{campaign_id}/guidelines", include_in_schema=False)
    def acknowledge(request: Request, campaign_id: int, form: FormData = Depends(page_form)):
        atomic(lambda s: service.acknowledge_guidelines(s, request.state.user, campaign_id))
        return RedirectResponse(f"/campaigns/{campaign_id}/next", 303)

    @app.get("/campaigns/{campaign_id}/next", include_in_schema=False)
    def next_task(request: Request, campaign_id: int, user: User = Depends(page_user)):
        try:
            assignment = atomic(lambda s: service.next_assignment(s, campaign_id, user, seed=assignment_seed))
        except service.GuidelinesNotRead:
            return RedirectResponse(f"/campaigns/{campaign_id}/guidelines", 303)
        if assignment is None:
            campaign = atomic(lambda s: service.get_campaign(s, campaign_id))
            return render(request, "done.html", campaign=campaign)
        return RedirectResponse(f"/tasks/{assignment.id}", 303)

    def _task_page(request: Request, assignment_id: int, user: User, status: int = 200, error: str | None = None):
        view = atomic(lambda s: task_view(service.assignment_for(s, assignment_id, user)))
        return render(request, "task.html", status, task=view, error=error, client_key=security.new_secret()[:32])

    @app.get("/tasks/{assignment_id}", response_class=HTMLResponse, include_in_schema=False)
    def task_page(request: Request, assignment_id: int, user: User = Depends(page_user)):
        return _task_page(request, assignment_id, user)

    @app.post("/tasks/{assignment_id}", include_in_schema=False)
    def answer_task(request: Request, assignment_id: int, form: FormData = Depends(page_form)):
        user = request.state.user

        def submit(session: Session) -> Judgement:
            task_type = service.assignment_for(session, assignment_id, user).task_type.value
            judgement, _ = service.submit_judgement(
                session, assignment_id, user, form_answer(task_type, form), comment=form.get("comment", ""),
                client_key=form.get("client_key") or None, via="web",
            )
            return judgement

        try:
            judgement = atomic(submit)
        except InvalidAnswer as error:
            return _task_page(request, assignment_id, user, 422, str(error))
        return RedirectResponse(f"/campaigns/{judgement.campaign_id}/next", 303)

    # ------------------------------------------------------------ admin pages

    @app.get("/admin", response_class=HTMLResponse, include_in_schema=False)
    def admin_home(request: Request, user: User = Depends(page_admin)):
        rows = atomic(lambda s: [(c, service.campaign_progress(s, c)) for c in service.list_campaigns(s)])
        return render(request, "admin_campaigns.html", rows=rows)

    @app.get("/admin/campaigns/new", response_class=HTMLResponse, include_in_schema=False)
    def new_campaign_page(request: Request, user: User = Depends(page_admin)):
        return render(request, "admin_new_campaign.html", error=None, task_types=[t.value for t in TaskType])

    @app.post("/admin/campaigns", include_in_schema=False)
    def create_campaign_page(request: Request, form: FormData = Depends(page_form), user: User = Depends(page_admin)):
        upload = form.get("file")
        has_file = upload is not None and bool(getattr(upload, "filename", ""))
        data = _read_upload(upload) if has_file else b""  # read once: `atomic` may run `create` again

        def create(session: Session) -> Campaign:
            campaign = service.create_campaign(
                session, form.get("name", ""), form.getlist("task_types"), overlap=_int(form, "overlap", 3),
                rubric_axes=form.get("rubric_axes", "").split(","), scale_min=_int(form, "scale_min", 1),
                scale_max=_int(form, "scale_max", 7), guidelines=form.get("guidelines", ""),
                min_seconds=_float(form, "min_seconds", 3.0), created_by=user,
            )
            if has_file:
                imports.import_file(session, campaign, upload.filename, data)
            return campaign

        try:
            campaign = atomic(create)
        except (service.InvalidRequest, service.Conflict, DataError) as error:
            return render(request, "admin_new_campaign.html", 422, error=str(error), task_types=[t.value for t in TaskType])
        return RedirectResponse(f"/admin/campaigns/{campaign.id}", 303)

    def _dashboard(session: Session, campaign_id: int) -> dict[str, Any]:
        campaign = service.get_campaign(session, campaign_id)
        try:
            from alignloop.feedback import quality
        except ImportError:
            report = None
        else:
            report = quality.campaign_report(session, campaign_id)
        return {"campaign": campaign, "progress": service.campaign_progress(session, campaign), "report": report}

    @app.get("/admin/campaigns/{campaign_id}", response_class=HTMLResponse, include_in_schema=False)
    def dashboard(request: Request, campaign_id: int, user: User = Depends(page_admin)):
        return render(request, "admin_dashboard.html", error=None, imported=None, **atomic(lambda s: _dashboard(s, campaign_id)))

    @app.post("/admin/campaigns/{campaign_id}/import", include_in_schema=False)
    def import_page(request: Request, campaign_id: int, form: FormData = Depends(page_form), user: User = Depends(page_admin)):
        upload = form.get("file")
        if upload is None or not getattr(upload, "filename", ""):
            raise service.InvalidRequest("choose a file to import")
        data = _read_upload(upload)
        try:
            result = atomic(lambda s: imports.import_file(s, service.get_campaign(s, campaign_id), upload.filename, data))
        except DataError as error:
            context = atomic(lambda s: _dashboard(s, campaign_id))
            return render(request, "admin_dashboard.html", 422, error=str(error), imported=None, **context)
        context = atomic(lambda s: _dashboard(s, campaign_id))
        return render(request, "admin_dashboard.html", error=None, imported=result, **context)

    @app.get("/admin/users", response_class=HTMLResponse, include_in_schema=False)
    def users_page(request: Request, user: User = Depends(page_admin)):
        return render(request, "admin_users.html", users=atomic(_all_users), new_token=None, error=None)

    @app.post("/admin/users", include_in_schema=False)
    def create_user_page(request: Request, form: FormData = Depends(page_form), user: User = Depends(page_admin)):
        try:
            atomic(lambda s: service.create_user(s, form.get("username", ""), form.get("password", ""), form.get("role", "evaluator")))
        except (service.InvalidRequest, service.Conflict) as error:
            return render(request, "admin_users.html", 422, users=atomic(_all_users), new_token=None, error=str(error))
        return RedirectResponse("/admin/users", 303)

    @app.post("/admin/users/{user_id}/tokens", include_in_schema=False)
    def create_token_page(request: Request, user_id: int, form: FormData = Depends(page_form), user: User = Depends(page_admin)):
        def issue(session: Session) -> str:
            owner = session.get(User, user_id)
            if owner is None:
                raise service.NotFound(f"no user {user_id}")
            return security.issue_api_token(session, owner, form.get("name") or "web")

        token = atomic(issue)
        return render(request, "admin_users.html", users=atomic(_all_users), new_token=token, error=None)

    # ------------------------------------------------------------ REST API

    @app.get("/api/v1/campaigns", tags=["evaluators"])
    def api_campaigns(user: User = Depends(api_user)) -> list[dict[str, Any]]:
        """Every campaign, with whether you acknowledged its guidelines and how many judgements you gave."""
        return atomic(lambda s: [
            {**campaign_view(row["campaign"]), "guidelines_acknowledged": row["read"], "done": row["done"]}
            for row in _home_rows(s, user)
        ])

    @app.post("/api/v1/campaigns/{campaign_id}/acknowledge", tags=["evaluators"], status_code=204)
    def api_acknowledge(campaign_id: int, user: User = Depends(api_user)) -> Response:
        """Confirm you have read the campaign's guidelines (needed before the first task)."""
        atomic(lambda s: service.acknowledge_guidelines(s, user, campaign_id))
        return Response(status_code=204)

    @app.post("/api/v1/campaigns/{campaign_id}/next", tags=["evaluators"], responses={204: {"description": "nothing left"}})
    def api_next(campaign_id: int, task_type: TaskType | None = None, user: User = Depends(api_user)):
        """Your open assignment in the campaign, or a new one; 204 when there is nothing left for you."""
        view = atomic(lambda s: _next_view(s, campaign_id, user, task_type, assignment_seed))
        return Response(status_code=204) if view is None else view

    @app.get("/api/v1/assignments/{assignment_id}", tags=["evaluators"])
    def api_assignment(assignment_id: int, user: User = Depends(api_user)) -> dict[str, Any]:
        """One of your assignments (403 for another evaluator's)."""
        return atomic(lambda s: task_view(_own_assignment(s, assignment_id, user)))

    @app.post("/api/v1/assignments/{assignment_id}/judgement", tags=["evaluators"], status_code=201)
    def api_submit(assignment_id: int, body: JudgementIn, response: Response, user: User = Depends(api_user)) -> dict[str, Any]:
        """Answer an assignment. 201 when stored; 200 with the stored judgement when `client_key` was seen before."""
        judgement, created = atomic(lambda s: service.submit_judgement(
            s, assignment_id, user, body.answer, comment=body.comment, client_key=body.client_key, via="api"))
        response.status_code = 201 if created else 200
        return judgement_view(judgement)

    @app.get("/api/v1/judgements/mine", tags=["evaluators"])
    def api_my_judgements(campaign_id: int | None = None, limit: int = 1000, offset: int = 0,
                          user: User = Depends(api_user)) -> list[dict[str, Any]]:
        return atomic(lambda s: [judgement_view(j) for j in service.list_judgements(
            s, campaign_id=campaign_id, evaluator_id=user.id, limit=min(limit, 10_000), offset=offset)])

    @app.post("/api/v1/campaigns", tags=["admins"], status_code=201)
    def api_create_campaign(body: CampaignIn, user: User = Depends(api_admin)) -> dict[str, Any]:
        return atomic(lambda s: campaign_view(service.create_campaign(
            s, body.name, [t.value for t in body.task_types], overlap=body.overlap, rubric_axes=body.rubric_axes,
            scale_min=body.scale_min, scale_max=body.scale_max, guidelines=body.guidelines,
            min_seconds=body.min_seconds, created_by=user)))

    @app.post("/api/v1/campaigns/{campaign_id}/items", tags=["admins"], status_code=201)
    def api_import(campaign_id: int, body: ItemsIn, user: User = Depends(api_admin)) -> dict[str, int]:
        """Import prompt rows or candidate rows; all or nothing (422 names every bad row)."""
        result = atomic(lambda s: imports.import_records(s, service.get_campaign(s, campaign_id), body.rows))
        return {"items": result.items, "candidates": result.candidates}

    @app.get("/api/v1/campaigns/{campaign_id}/judgements", tags=["admins"])
    def api_judgements(campaign_id: int, limit: int = 1000, offset: int = 0,
                       user: User = Depends(api_admin)) -> list[dict[str, Any]]:
        return atomic(lambda s: [judgement_view(j) for j in service.list_judgements(
            s, campaign_id=campaign_id, limit=min(limit, 10_000), offset=offset)])

    return app


def app_from_environment() -> FastAPI:
    """The app over the database named by $ALIGNLOOP_FEEDBACK_DB: the factory uvicorn calls in
    each worker process when `alignloop serve --workers N` runs several."""
    return create_app(os.environ[DB_URL_VARIABLE])


def _next_view(session: Session, campaign_id: int, user: User, task_type: TaskType | None,
               seed: int | None = None) -> dict[str, Any] | None:
    assignment = service.next_assignment(session, campaign_id, user, task_type, seed=seed)
    return None if assignment is None else task_view(assignment)


def _own_assignment(session: Session, assignment_id: int, user: User) -> Assignment:
    """Over the API even an admin reads only their own assignments: the API acts as one evaluator."""
    assignment = service.assignment_for(session, assignment_id, user)
    if assignment.evaluator_id != user.id:
        raise service.Forbidden(f"assignment {assignment_id} belongs to another evaluator")
    return assignment


def _all_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def _read_upload(upload: UploadFile) -> bytes:
    data = upload.file.read(imports.MAX_UPLOAD_BYTES + 1)
    if len(data) > imports.MAX_UPLOAD_BYTES:
        raise DataError(f"{upload.filename}: larger than the upload limit of {imports.MAX_UPLOAD_BYTES} bytes")
    return data


def _int(form: FormData, name: str, default: int) -> int:
    try:
        return int(form.get(name) or default)
    except ValueError:
        raise service.InvalidRequest(f"{name}: expected a whole number, got {form.get(name)!r}") from None


def _float(form: FormData, name: str, default: float) -> float:
    try:
        return float(form.get(name) or default)
    except ValueError:
        raise service.InvalidRequest(f"{name}: expected a number, got {form.get(name)!r}") from None
