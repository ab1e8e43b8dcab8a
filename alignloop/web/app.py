"""`create_app(db_url)`: the feedback web app over one database, and how to serve it.

Errors map to status codes in one place: the store's typed errors (`_STATUS`), request
validation (422, as HTML on pages), a value the database cannot take (422), anything else a
500 that still carries the security headers and says nothing about the internals. No input
should reach the last one: the API is fuzzed from its own OpenAPI schema in the tests.
"""

from __future__ import annotations

import logging
import os
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError as DatabaseDataError
from sqlalchemy.exc import StatementError

from alignloop.data.errors import DataError
from alignloop.feedback import service
from alignloop.feedback.assignment import InvalidAnswer
from alignloop.web import api, pages
from alignloop.web.auth import SignInRequired
from alignloop.web.middleware import BodySizeLimit, SecurityHeaders, add_security_headers
from alignloop.web.store import WebStore

__all__ = ["create_app", "app_from_environment", "server_options", "DB_URL_VARIABLE"]

DB_URL_VARIABLE = "ALIGNLOOP_FEEDBACK_DB"  # read by `app_from_environment` in each uvicorn worker
_STATUS: dict[type[Exception], int] = {
    service.NotFound: 404, service.Forbidden: 403, service.Conflict: 409, service.InvalidRequest: 422,
    InvalidAnswer: 422, DataError: 422,
}
_log = logging.getLogger("alignloop.web")


def create_app(db_url: str, assignment_seed: int | None = None) -> FastAPI:
    """The app over an already upgraded database (`database.upgrade(db_url)` first).

    `assignment_seed` makes the choice of items and display orders reproducible (simulations
    with scripted annotators, `service.assignment_rng`); people's servers leave it unseeded.
    """
    app = FastAPI(title="alignloop feedback", version="1", docs_url=None, redoc_url=None)
    app.state.store = WebStore(db_url, assignment_seed)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    # Swagger UI's own files, from a PyPI package: the CDN FastAPI would link is not reachable
    # from every machine, and the CSP allows scripts from this server only.
    app.mount("/docs/assets", StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")
    app.include_router(pages.router)
    app.include_router(api.router)
    app.add_api_route("/docs", _docs_page, include_in_schema=False, response_class=HTMLResponse)
    _add_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodySizeLimit)  # outermost of the two: a refused body gets the headers too
    return app


def app_from_environment() -> FastAPI:
    """The app over the database named by $ALIGNLOOP_FEEDBACK_DB: the factory uvicorn calls in
    each worker process when `alignloop serve --workers N` runs several."""
    return create_app(os.environ[DB_URL_VARIABLE])


def server_options(forwarded_allow_ips: str | None = None) -> dict[str, Any]:
    """uvicorn's options for who may say where a request came from. Without proxies named,
    `X-Forwarded-For` is ignored (uvicorn would otherwise believe it from 127.0.0.1, and a local
    client could claim any address and dodge the sign-in limit)."""
    if not forwarded_allow_ips:
        return {"proxy_headers": False, "forwarded_allow_ips": ""}
    return {"proxy_headers": True, "forwarded_allow_ips": forwarded_allow_ips}


def _docs_page() -> HTMLResponse:
    return HTMLResponse("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>alignloop feedback API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script></body></html>""")


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error(request: Request, status: int, message: str) -> Response:
    if _is_api(request):
        return JSONResponse({"detail": message}, status)
    return pages.render(request, "error.html", status, code=status, message=message)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    def _sign_in_required(request: Request, error: SignInRequired):
        if _is_api(request):
            return JSONResponse({"detail": str(error)}, 401, headers={"WWW-Authenticate": "Bearer"})
        if request.method == "GET":
            return RedirectResponse("/signin", 303)
        return HTMLResponse("sign in first", 401)

    for error_type, status in _STATUS.items():
        def _handler(request: Request, error: Exception, status: int = status):
            return _error(request, status, str(error))
        app.add_exception_handler(error_type, _handler)

    @app.exception_handler(RequestValidationError)
    def _invalid_request(request: Request, error: RequestValidationError):
        if _is_api(request):
            return JSONResponse({"detail": _jsonable(error.errors())}, 422)
        problems = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors())
        return _error(request, 422, problems)

    @app.exception_handler(DatabaseDataError)
    def _database_refused(request: Request, error: DatabaseDataError):
        # The request models bound what they can; this catches what only the database knows.
        return _error(request, 422, f"a value does not fit the database: {str(error.orig).splitlines()[0]}")

    @app.exception_handler(StatementError)
    def _statement_error(request: Request, error: StatementError):
        if isinstance(error.orig, (OverflowError, ValueError)):  # e.g. SQLite's 64-bit integers
            return _error(request, 422, f"a value does not fit the database: {error.orig}")
        return _internal_error(request, error)  # answered inside the middleware, which adds the headers

    @app.exception_handler(Exception)
    def _unhandled(request: Request, error: Exception):
        # Starlette sends this response from outside every middleware: add the headers here.
        return add_security_headers(_internal_error(request, error), request.url.path)


def _internal_error(request: Request, error: Exception) -> Response:
    _log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return _error(request, 500, "internal error; the server log has the details")


def _jsonable(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's error entries without their `ctx` / `input` (which may hold the bad value
    itself, such as a lone surrogate that JSON cannot encode)."""
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
