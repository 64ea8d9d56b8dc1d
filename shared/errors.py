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
