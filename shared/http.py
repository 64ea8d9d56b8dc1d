"""HTTP behaviour every service shares: bounded bodies and errors that name the problem.

Every error is an RFC 9457 problem (`shared.problems`). Validation errors list each offending
field with pydantic's message but never the submitted value, so a health answer can never come
back in an error body or reach a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import Conflict, FieldRejected, Forbidden, NotFound, RateLimited, Unauthorized
from shared.locks import LockTimeout
from shared.problems import MEDIA_TYPE, ErrorCode

log = logging.getLogger(__name__)

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
"""The methods whose bodies `BodyLimit` measures."""
ROUTING_ERRORS = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}
"""Starlette's own refusals: no such path, no such method."""


class ProblemResponse(JSONResponse):
    """A problem details answer. Its `instance` is the path of the request it answers, which
    the response learns when it is sent: a route or handler need not pass the request in."""

    media_type = MEDIA_TYPE

    def __init__(self, problem: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        self.problem = problem
        super().__init__(problem, status_code=problem["status"], headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.body = self.render({**self.problem, "instance": scope["path"]})
        self.headers["content-length"] = str(len(self.body))
        await super().__call__(scope, receive, send)


def problem(
    status: int,
    error: ErrorCode,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> ProblemResponse:
    """An error answer; extensions that are None are left out."""
    body = {
        "type": error.type_uri,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "error": error.value,
        **{name: value for name, value in extensions.items() if value is not None},
    }
    return ProblemResponse(body, headers)


def fields(*errors: tuple[str, str]) -> list[dict[str, str]]:
    """The `errors` member: (field, message) pairs."""
    return [{"field": field, "message": message} for field, message in errors]


def field_name(location: tuple[int | str, ...] | list[int | str]) -> str:
    parts = [str(p) for p in location]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> ProblemResponse:
        errors = []
        for err in exc.errors():
            field = field_name(err["loc"])
            message = err["msg"]
            if err["type"] == "json_invalid":
                field, message = "body", f"the body is not valid JSON ({err['ctx']['error']})"
            errors.append((field, message))
        summary = "; ".join(f"{field}: {message}" for field, message in errors)
        return problem(422, ErrorCode.INVALID_REQUEST, summary, errors=fields(*errors))

    @app.exception_handler(FieldRejected)
    async def rejected(_: Request, exc: FieldRejected) -> ProblemResponse:
        return problem(
            422,
            ErrorCode.INVALID_REQUEST,
            f"{exc.field}: {exc.message}",
            errors=fields((exc.field, exc.message)),
        )

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> ProblemResponse:
        return problem(404, ErrorCode.NOT_FOUND, str(exc))

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> ProblemResponse:
        errors = fields((exc.field, exc.message)) if exc.field else None
        return problem(409, ErrorCode.CONFLICT, exc.message, reason=exc.reason.value, errors=errors)

    @app.exception_handler(HTTPException)
    async def refused(_: Request, exc: HTTPException) -> ProblemResponse:
        """A routing refusal, or FastAPI's 400 for a body it cannot even decode (not UTF-8):
        invalid JSON, which the contract answers with a 422 like any other (SPEC section 3)."""
        if exc.status_code in ROUTING_ERRORS:
            code = ROUTING_ERRORS[exc.status_code]
            return problem(exc.status_code, code, exc.detail, headers=exc.headers)
        message = "the body is not valid JSON (not UTF-8 text)"
        return problem(
            422, ErrorCode.INVALID_REQUEST, f"body: {message}", errors=fields(("body", message))
        )

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, exc: Unauthorized) -> ProblemResponse:
        return problem(
            401,
            ErrorCode.UNAUTHORIZED,
            str(exc) or "a valid bearer token is required",
            headers={"WWW-Authenticate": 'Bearer realm="clinicflow"'},
        )

    @app.exception_handler(Forbidden)
    async def forbidden(_: Request, exc: Forbidden) -> ProblemResponse:
        return problem(403, ErrorCode.FORBIDDEN, str(exc))

    @app.exception_handler(RateLimited)
    async def rate_limited(_: Request, exc: RateLimited) -> ProblemResponse:
        headers = {"Retry-After": str(exc.retry_after)}
        return problem(429, ErrorCode.TOO_MANY_REQUESTS, str(exc), headers=headers)

    @app.exception_handler(LockTimeout)
    async def busy(_: Request, __: LockTimeout) -> ProblemResponse:
        detail = "another change to this resource is in progress; retry"
        return problem(503, ErrorCode.BUSY, detail, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> ProblemResponse:
        log.error("unexpected error: %s", type(exc).__name__)
        return problem(500, ErrorCode.INTERNAL_ERROR, "the request could not be completed")


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413 before any handler reads them.

    A small pure-ASGI middleware: Starlette has no body-size limit of its own. Bodies are
    buffered (they are at most `max_bytes`) and replayed to the app.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
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
        limit = f"the request body is larger than {self.max_bytes // 1024} KiB"
        response = problem(413, ErrorCode.BODY_TOO_LARGE, limit, errors=fields(("body", limit)))
        await response(scope, receive, send)
