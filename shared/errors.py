"""Errors the handlers of every service raise, mapped to HTTP answers in `shared.http`."""

from __future__ import annotations


class FieldRejected(Exception):
    """A value the contract refuses (HTTP 422); `field` names what to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class NotFound(Exception):
    """No such resource (HTTP 404); the message says which."""


class Unauthorized(Exception):
    """No valid bearer token (HTTP 401 with `WWW-Authenticate: Bearer`)."""


class Forbidden(Exception):
    """The caller's role or sites do not allow this (HTTP 403); the message says which."""


class RateLimited(Exception):
    """Too many requests from one token (HTTP 429); retry after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many requests; retry after {retry_after} s")
        self.retry_after = retry_after
