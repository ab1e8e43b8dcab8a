"""Who is asking, as FastAPI dependencies. Two ways in, never mixed:

* pages use a session cookie (HttpOnly, SameSite=Lax) and a per-session CSRF token that every
  state-changing form carries; a POST without a session gets 401, with a missing or forged token
  403. The sign-in form, before there is a session, carries a double-submit token (cookie + field).
* the REST API uses bearer API tokens and no cookies, so a browser cannot be tricked into
  calling it; no CSRF token is needed there.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import FormData

from alignloop.feedback import security, service
from alignloop.feedback.models import Role, User
from alignloop.web.store import WebStore

__all__ = [
    "SESSION_COOKIE", "SIGNIN_CSRF_COOKIE", "SignInRequired", "store", "api_user", "api_admin",
    "page_user", "page_form", "page_admin",
]

SESSION_COOKIE = "alignloop_session"
SIGNIN_CSRF_COOKIE = "alignloop_signin_csrf"
_bearer = HTTPBearer(auto_error=False, description="an API token from `alignloop feedback token NAME`")


class SignInRequired(Exception):
    """No (valid) credentials; pages redirect GETs to the sign-in page, everything else gets 401."""


def store(request: Request) -> WebStore:
    return request.app.state.store


def api_user(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
             web: WebStore = Depends(store)) -> User:
    def live_token(session):
        token = security.api_token_for(session, credentials.credentials if credentials else None)
        return None if token is None else (token, token.user)  # the user loaded inside the transaction

    found = web.read(live_token)
    if found is None:
        raise SignInRequired("missing or invalid API token (send Authorization: Bearer <token>)")
    token, user = found
    if security.token_needs_touch(token):  # at most one write a minute per token
        web.write(lambda s: security.touch_api_token(s, token.id))
    return user


def api_admin(user: User = Depends(api_user)) -> User:
    if user.role != Role.admin:
        raise service.Forbidden("admins only")
    return user


def page_user(request: Request, web: WebStore = Depends(store)) -> User:
    web_session = web.read(lambda s: security.web_session_for(s, request.cookies.get(SESSION_COOKIE)))
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
