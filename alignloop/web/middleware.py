"""ASGI middleware: security headers on every response, and a limit on request bodies.

Both are plain ASGI classes, cheaper per request than Starlette's `@app.middleware("http")`,
which runs every response through an extra task and stream.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import Response

__all__ = ["SECURITY_HEADERS", "DOCS_CSP", "MAX_BODY_BYTES", "SecurityHeaders", "BodySizeLimit", "add_security_headers"]

_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'")
# /docs runs Swagger UI from /static (no CDN); it sets inline styles and shows data: images.
DOCS_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
MAX_BODY_BYTES = 21 * 1024 * 1024  # an upload of the 20 MiB import limit, with its multipart framing


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


# Encoded once: these go on every response.
_PAGE_HEADERS = _encoded(SECURITY_HEADERS)
_DOCS_HEADERS = _encoded({**SECURITY_HEADERS, "Content-Security-Policy": DOCS_CSP})
_NO_STORE = (b"cache-control", b"no-store")


def _header_list(path: str) -> list[tuple[bytes, bytes]]:
    headers = _DOCS_HEADERS if path == "/docs" or path.startswith("/docs/") else _PAGE_HEADERS
    if path.startswith(("/static", "/docs/assets", "/openapi.json")):
        return headers
    return [*headers, _NO_STORE]


def add_security_headers(response: Response, path: str) -> Response:
    """The same headers on a response built outside the middleware (the 500 handler's)."""
    response.raw_headers.extend(_header_list(path))
    return response


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` (and no-store on dynamic pages) to every response that passes."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = _header_list(scope["path"])

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodySizeLimit:
    """413 for a body over `limit` bytes, before it is parsed: at once when Content-Length says
    so, else as soon as the streamed body passes the limit (the route reading it then stops)."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            response = Response(f"request body larger than {self.limit} bytes", 413, media_type="text/plain")
            return await response(scope, receive, send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI and Starlette pass an HTTPException raised while reading through.
                    raise HTTPException(413, f"request body larger than {self.limit} bytes")
            return message

        await self.app(scope, counting_receive, send)
