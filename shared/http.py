"""HTTP behaviour every service shares: bounded bodies and errors that name the problem.

Validation errors list each offending field with pydantic's message but never the submitted
value, so a health answer can never come back in an error body or reach a log line.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import FieldRejected, Forbidden, NotFound, RateLimited, Unauthorized
from shared.locks import LockTimeout

log = logging.getLogger(__name__)


def problem(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, **extra}, status_code=status)


def field_name(location: tuple[int | str, ...] | list[int | str]) -> str:
    parts = [str(p) for p in location]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            field = field_name(err["loc"])
            message = err["msg"]
            if err["type"] == "json_invalid":
                field, message = "body", f"the body is not valid JSON ({err['ctx']['error']})"
            errors.append({"field": field, "message": message})
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "invalid_request", summary, errors=errors)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return problem(404, "not_found", str(exc))

    @app.exception_handler(FieldRejected)
    async def rejected(_: Request, exc: FieldRejected) -> JSONResponse:
        return problem(
            422,
            "invalid_request",
            f"{exc.field}: {exc.message}",
            errors=[{"field": exc.field, "message": exc.message}],
        )

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        response = problem(401, "unauthorized", str(exc) or "a valid bearer token is required")
        response.headers["WWW-Authenticate"] = 'Bearer realm="clinicflow"'
        return response

    @app.exception_handler(Forbidden)
    async def forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return problem(403, "forbidden", str(exc))

    @app.exception_handler(RateLimited)
    async def rate_limited(_: Request, exc: RateLimited) -> JSONResponse:
        response = problem(429, "too_many_requests", str(exc))
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(LockTimeout)
    async def busy(_: Request, __: LockTimeout) -> JSONResponse:
        response = problem(503, "busy", "another change to this resource is in progress; retry")
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error: %s", type(exc).__name__)
        return problem(500, "internal_error", "the request could not be completed")


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413 before any handler reads them.

    A small pure-ASGI middleware: Starlette has no body-size limit of its own. Bodies are
    buffered (they are at most `max_bytes`) and replayed to the app.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in {"POST", "PUT", "PATCH"}:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(
            413,
            "body_too_large",
            f"the request body is larger than {self.max_bytes // 1024} KiB",
            field="body",
        )
        await response(scope, receive, send)
