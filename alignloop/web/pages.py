"""The server-rendered pages: sign-in, an evaluator's campaigns and tasks, the admin's campaigns,
dashboards, users and tokens.

Every state-changing action is a POST carrying the session's CSRF token, taking the next task
included (a GET never creates an assignment: SameSite=Lax cookies go along with another site's
links). Everything a user supplied is rendered by Jinja2 with autoescaping on, and the
Content-Security-Policy allows no inline scripts, so a `<script>` inside a prompt is shown as
text and could not run even if it were not escaped. Handlers are plain `def`: FastAPI runs them
in its thread pool, and a slow database call does not stall the event loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, Depends, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from alignloop.data.errors import DataError
from alignloop.feedback import imports, security, service
from alignloop.feedback.assignment import InvalidAnswer
from alignloop.feedback.models import Judgement, Role, TaskType, User
from alignloop.web.auth import SESSION_COOKIE, SIGNIN_CSRF_COOKIE, page_admin, page_form, page_user, store
from alignloop.web.schemas import Id, form_answer, task_view
from alignloop.web.store import WebStore

__all__ = ["router", "render", "TEMPLATES_DIR", "STATIC_DIR"]

HERE = Path(__file__).parent
TEMPLATES_DIR, STATIC_DIR = HERE / "templates", HERE / "static"
_templates = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True, undefined=jinja2.StrictUndefined,
))
router = APIRouter(include_in_schema=False)


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("user", getattr(request.state, "user", None))
    context.setdefault("csrf_token", getattr(request.state, "csrf_token", ""))
    return _templates.TemplateResponse(request, name, context, status_code=status)


# ---------------------------------------------------------------- sign in / out, health


@router.get("/healthz")
def healthz(web: WebStore = Depends(store)) -> dict[str, str]:
    web.read(service.ping)
    return {"status": "ok"}


@router.get("/")
def root():
    return RedirectResponse("/home", 303)


def _signin_form(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
    # No session yet, so the sign-in form's CSRF token is a double-submit cookie: a page on
    # another site can post the form but cannot read or set the cookie to match it.
    token = request.cookies.get(SIGNIN_CSRF_COOKIE) or security.new_secret()
    response = render(request, "signin.html", status, error=error, csrf_token=token)
    response.set_cookie(SIGNIN_CSRF_COOKIE, token, httponly=True, samesite="lax", secure=request.url.scheme == "https")
    return response


@router.get("/signin", response_class=HTMLResponse)
def signin_page(request: Request):
    return _signin_form(request)


@router.post("/signin")
def signin(request: Request, username: str = Form(""), password: str = Form(""), csrf_token: str = Form(""),
           web: WebStore = Depends(store)):
    expected = request.cookies.get(SIGNIN_CSRF_COOKIE)
    if not expected or not security.csrf_matches(expected, csrf_token):
        return _signin_form(request, 403, "the sign-in form expired; please try again")
    client = request.client.host if request.client else "unknown"
    with web.session() as session:
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


@router.post("/signout")
def signout(request: Request, form: FormData = Depends(page_form), web: WebStore = Depends(store)):
    web.write(lambda s: security.end_web_session(s, request.cookies.get(SESSION_COOKIE)))
    response = RedirectResponse("/signin", 303)
    response.delete_cookie(SESSION_COOKIE)
    return response


# ---------------------------------------------------------------- evaluator pages


@router.get("/home", response_class=HTMLResponse)
def home(request: Request, user: User = Depends(page_user), web: WebStore = Depends(store)):
    return render(request, "home.html", rows=web.read(lambda s: service.evaluator_campaigns(s, user)))


@router.get("/campaigns/{campaign_id}/guidelines", response_class=HTMLResponse)
def guidelines(request: Request, campaign_id: Id, user: User = Depends(page_user), web: WebStore = Depends(store)):
    return render(request, "guidelines.html", campaign=web.read(lambda s: service.get_campaign(s, campaign_id)))


def _to_next_task(campaign_id: int, user: User, web: WebStore) -> RedirectResponse:
    """Hand out the evaluator's next task (a POST's work) and send the browser to it."""
    try:
        assignment = web.write(lambda s: service.next_assignment(s, campaign_id, user, seed=web.assignment_seed))
    except service.GuidelinesNotRead:
        return RedirectResponse(f"/campaigns/{campaign_id}/guidelines", 303)
    if assignment is None:
        return RedirectResponse(f"/campaigns/{campaign_id}/done", 303)
    return RedirectResponse(f"/tasks/{assignment.id}", 303)


@router.post("/campaigns/{campaign_id}/guidelines")
def acknowledge(request: Request, campaign_id: Id, form: FormData = Depends(page_form), web: WebStore = Depends(store)):
    web.write(lambda s: service.acknowledge_guidelines(s, request.state.user, campaign_id))
    return _to_next_task(campaign_id, request.state.user, web)


@router.post("/campaigns/{campaign_id}/next")
def next_task(request: Request, campaign_id: Id, form: FormData = Depends(page_form), web: WebStore = Depends(store)):
    return _to_next_task(campaign_id, request.state.user, web)


@router.get("/campaigns/{campaign_id}/done", response_class=HTMLResponse)
def campaign_done(request: Request, campaign_id: Id, user: User = Depends(page_user), web: WebStore = Depends(store)):
    return render(request, "done.html", campaign=web.read(lambda s: service.get_campaign(s, campaign_id)))


def _task_page(request: Request, assignment_id: int, user: User, web: WebStore, status: int = 200,
               error: str | None = None) -> HTMLResponse:
    view = web.read(lambda s: task_view(service.assignment_for(s, assignment_id, user)))
    return render(request, "task.html", status, task=view, error=error, client_key=security.new_secret()[:32])


@router.get("/tasks/{assignment_id}", response_class=HTMLResponse)
def task_page(request: Request, assignment_id: Id, user: User = Depends(page_user), web: WebStore = Depends(store)):
    return _task_page(request, assignment_id, user, web)


@router.post("/tasks/{assignment_id}")
def answer_task(request: Request, assignment_id: Id, form: FormData = Depends(page_form), web: WebStore = Depends(store)):
    user = request.state.user

    def submit(session: Session) -> Judgement:
        task_type = service.assignment_for(session, assignment_id, user).task_type.value
        judgement, _ = service.submit_judgement(
            session, assignment_id, user, form_answer(task_type, form), comment=form.get("comment", ""),
            client_key=form.get("client_key") or None, via="web",
        )
        return judgement

    try:
        judgement = web.write(submit)
    except InvalidAnswer as error:
        return _task_page(request, assignment_id, user, web, 422, str(error))
    return _to_next_task(judgement.campaign_id, user, web)


def _account_page(request: Request, status: int = 200, error: str | None = None, notice: str | None = None):
    return render(request, "account.html", status, error=error, notice=notice, min_password=service.MIN_PASSWORD_LENGTH)


@router.get("/account", response_class=HTMLResponse)
def account(request: Request, user: User = Depends(page_user)):
    return _account_page(request)


@router.post("/account/password")
def change_password(request: Request, form: FormData = Depends(page_form), web: WebStore = Depends(store)):
    """Change your own password (the current one first); this browser stays signed in, others not."""
    user = request.state.user

    def change(session: Session) -> str:
        if not security.verify_password(service.get_user(session, user.id).password_hash, _text(form, "current")):
            raise service.InvalidRequest("current password: not the one on record")
        service.set_password(session, service.get_user(session, user.id), _text(form, "password"))
        secret, _ = security.start_web_session(session, user)
        return secret

    try:
        secret = web.write(change)
    except service.InvalidRequest as error:
        return _account_page(request, 422, error=str(error))
    response = RedirectResponse("/home", 303)
    response.set_cookie(SESSION_COOKIE, secret, httponly=True, samesite="lax", secure=request.url.scheme == "https",
                        max_age=int(security.SESSION_LIFETIME.total_seconds()))
    return response


# ---------------------------------------------------------------- admin pages


def _new_campaign_form(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
    return render(request, "admin_new_campaign.html", status, error=error, task_types=[t.value for t in TaskType])


@router.get("/admin", response_class=HTMLResponse)
def admin_home(request: Request, user: User = Depends(page_admin), web: WebStore = Depends(store)):
    rows = web.read(lambda s: [(c, service.campaign_progress(s, c)) for c in service.list_campaigns(s)])
    return render(request, "admin_campaigns.html", rows=rows)


@router.get("/admin/campaigns/new", response_class=HTMLResponse)
def new_campaign_page(request: Request, user: User = Depends(page_admin)):
    return _new_campaign_form(request)


@router.post("/admin/campaigns")
def create_campaign_page(request: Request, form: FormData = Depends(page_form), user: User = Depends(page_admin),
                         web: WebStore = Depends(store)):
    upload = form.get("file")
    has_file = upload is not None and bool(getattr(upload, "filename", ""))
    data = _read_upload(upload) if has_file else b""  # read once: `write` may run `create` again

    def create(session: Session):
        campaign = service.create_campaign(
            session, _text(form, "name"), form.getlist("task_types"), overlap=_int(form, "overlap", 3),
            rubric_axes=_text(form, "rubric_axes").split(","), scale_min=_int(form, "scale_min", 1),
            scale_max=_int(form, "scale_max", 7), guidelines=_text(form, "guidelines"),
            min_seconds=_float(form, "min_seconds", 3.0), created_by=user,
        )
        if has_file:
            imports.import_file(session, campaign, upload.filename, data)
        return campaign

    try:
        campaign = web.write(create)
    except (service.InvalidRequest, service.Conflict, DataError) as error:
        return _new_campaign_form(request, 422, str(error))
    return RedirectResponse(f"/admin/campaigns/{campaign.id}", 303)


@router.get("/admin/campaigns/{campaign_id}", response_class=HTMLResponse)
def dashboard(request: Request, campaign_id: Id, user: User = Depends(page_admin), web: WebStore = Depends(store)):
    # A read-only transaction: the quality figures can take seconds and must not block writers.
    return render(request, "admin_dashboard.html", error=None, imported=None,
                  **web.read(lambda s: web.dashboard(s, campaign_id)))


@router.post("/admin/campaigns/{campaign_id}/import")
def import_page(request: Request, campaign_id: Id, form: FormData = Depends(page_form), user: User = Depends(page_admin),
                web: WebStore = Depends(store)):
    upload = form.get("file")
    if upload is None or not getattr(upload, "filename", ""):
        raise service.InvalidRequest("choose a file to import")
    data = _read_upload(upload)
    try:
        result = web.write(lambda s: imports.import_file(s, service.get_campaign(s, campaign_id), upload.filename, data))
    except DataError as error:
        context = web.read(lambda s: web.dashboard(s, campaign_id))
        return render(request, "admin_dashboard.html", 422, error=str(error), imported=None, **context)
    return render(request, "admin_dashboard.html", error=None, imported=result,
                  **web.read(lambda s: web.dashboard(s, campaign_id)))


def _users_page(request: Request, web: WebStore, status: int = 200, new_token: str | None = None,
                error: str | None = None, notice: str | None = None) -> HTMLResponse:
    def rows(session: Session) -> list[dict[str, Any]]:
        tokens: dict[int, list] = {}
        for token in service.list_tokens(session):
            tokens.setdefault(token.user_id, []).append(token)
        return [{"user": user, "tokens": tokens.get(user.id, [])} for user in service.list_users(session)]

    return render(request, "admin_users.html", status, rows=web.read(rows), new_token=new_token, error=error,
                  notice=notice, min_password=service.MIN_PASSWORD_LENGTH)


def _admin_action(request: Request, web: WebStore, work, done: str) -> HTMLResponse:
    """Run an admin's change to an account; the users page shows what happened (or why not)."""
    try:
        web.write(work)
    except (service.InvalidRequest, service.Conflict) as error:
        return _users_page(request, web, 422, error=str(error))
    return _users_page(request, web, notice=done)


@router.get("/admin/users", response_class=HTMLResponse)
def users_page(request: Request, user: User = Depends(page_admin), web: WebStore = Depends(store)):
    return _users_page(request, web)


@router.post("/admin/users")
def create_user_page(request: Request, form: FormData = Depends(page_form), user: User = Depends(page_admin),
                     web: WebStore = Depends(store)):
    username = _text(form, "username")
    return _admin_action(request, web, lambda s: service.create_user(
        s, username, _text(form, "password"), _text(form, "role") or "evaluator"), f"created {username!r}")


@router.post("/admin/users/{user_id}/tokens")
def create_token_page(request: Request, user_id: Id, form: FormData = Depends(page_form), user: User = Depends(page_admin),
                      web: WebStore = Depends(store)):
    try:
        token = web.write(lambda s: service.issue_token(s, service.get_user(s, user_id), _text(form, "name") or "web"))
    except InvalidAnswer as error:
        return _users_page(request, web, 422, error=str(error))
    return _users_page(request, web, new_token=token)


@router.post("/admin/tokens/{token_id}/revoke")
def revoke_token_page(request: Request, token_id: Id, form: FormData = Depends(page_form), user: User = Depends(page_admin),
                      web: WebStore = Depends(store)):
    return _admin_action(request, web, lambda s: service.revoke_token(s, token_id), f"revoked API token {token_id}")


@router.post("/admin/users/{user_id}/active")
def set_active_page(request: Request, user_id: Id, form: FormData = Depends(page_form), user: User = Depends(page_admin),
                    web: WebStore = Depends(store)):
    active = _text(form, "active") == "true"
    return _admin_action(request, web, lambda s: service.set_user_active(s, service.get_user(s, user_id), active),
                         f"user {user_id} {'enabled' if active else 'disabled (signed out everywhere)'}")


@router.post("/admin/users/{user_id}/password")
def reset_password_page(request: Request, user_id: Id, form: FormData = Depends(page_form), user: User = Depends(page_admin),
                        web: WebStore = Depends(store)):
    password = _text(form, "password")
    return _admin_action(request, web, lambda s: service.set_password(s, service.get_user(s, user_id), password),
                         f"new password set for user {user_id}; their browsers are signed out")


# ---------------------------------------------------------------- form fields


def _read_upload(upload: UploadFile) -> bytes:
    data = upload.file.read(imports.MAX_UPLOAD_BYTES + 1)
    if len(data) > imports.MAX_UPLOAD_BYTES:
        raise DataError(f"{upload.filename}: larger than the upload limit of {imports.MAX_UPLOAD_BYTES} bytes")
    return data


def _text(form: FormData, name: str) -> str:
    value = form.get(name) or ""
    if not isinstance(value, str):
        raise service.InvalidRequest(f"{name}: expected a text field, got a file")
    return value


def _int(form: FormData, name: str, default: int) -> int:
    value = _text(form, name).strip()
    if not value:
        return default
    if not (value.isascii() and value.lstrip("-").isdigit() and len(value) <= 12):
        raise service.InvalidRequest(f"{name}: expected a whole number, got {value!r}")
    return int(value)


def _float(form: FormData, name: str, default: float) -> float:
    value = _text(form, name).strip()
    try:
        return float(value) if value else default  # NaN and infinity are refused by the service
    except ValueError:
        raise service.InvalidRequest(f"{name}: expected a number, got {value!r}") from None
