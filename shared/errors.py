"""Errors the handlers of every service raise, mapped to HTTP answers in `shared.http`."""

from __future__ import annotations

from enum import StrEnum


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


class ConflictReason(StrEnum):
    """Every `reason` a 409 answer can carry: the one list that clients and the OpenAPI
    documents read."""

    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    ALREADY_COMPLETED = "already_completed"
    CANCELLED = "cancelled"
    NO_FREE_SLOT = "no_free_slot"
    TOO_CLOSE_TO_PREVIOUS = "too_close_to_previous"
    OUTSIDE_OPENING_HOURS = "outside_opening_hours"
    NO_ROOM_FREE = "no_room_free"
    TOO_SOON = "too_soon"
    NOT_ON_THE_QUARTER_HOUR = "not_on_the_quarter_hour"


class Conflict(Exception):
    """The request cannot apply to the current state (HTTP 409); `reason` says why, `field`
    names what the caller sent that conflicts, when one thing does."""

    def __init__(self, reason: ConflictReason, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field
