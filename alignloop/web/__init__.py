"""The feedback web app: server-rendered pages for evaluators and admins, and a REST API, over
the store in `alignloop.feedback` (which imports neither FastAPI nor torch).

    app.py         create_app: the routers, the error handlers, the middleware; how to serve it
    middleware.py  security headers on every response (500s too), the request body limit
    store.py       the store as routes use it: read-only and write transactions, a report cache
    auth.py        who is asking: API tokens, session cookies, CSRF (FastAPI dependencies)
    pages.py       the server-rendered pages (an APIRouter), templates/ and static/
    api.py         the REST API under /api/v1 (an APIRouter), documented at /docs
    schemas.py     request bodies, bounded to what the columns hold, and the JSON views of rows

Every database access goes through `alignloop.feedback.service` (or `security`, `imports`,
`quality`); routes only translate between HTTP and those calls.
"""

from alignloop.web.app import DB_URL_VARIABLE, app_from_environment, create_app, server_options
from alignloop.web.auth import SESSION_COOKIE

__all__ = ["create_app", "app_from_environment", "server_options", "SESSION_COOKIE", "DB_URL_VARIABLE"]
