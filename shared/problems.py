"""The error bodies of every HTTP route: RFC 9457 problem details (`application/problem+json`).

Each answer carries the standard members (`type`, `title`, `status`, `detail`, `instance`) and
the extensions clients already read: `error`, a stable code per kind of problem, and `errors`,
the fields at fault. A 409 adds `reason`. The models below are what the OpenAPI documents
declare (`shared.openapi`); `shared.http` sends them.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from shared.errors import ConflictReason

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://clinicflow.example/problems/"
"""Problem types are identifiers under this base, one per `error` code (README, Errors)."""


class ErrorCode(StrEnum):
    """The `error` member: what went wrong, in a word a program can switch on."""

    INVALID_REQUEST = "invalid_request"
    BODY_TOO_LARGE = "body_too_large"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    TOO_MANY_REQUESTS = "too_many_requests"
    BUSY = "busy"
    NOT_READY = "not_ready"
    INTERNAL_ERROR = "internal_error"

    @property
    def type_uri(self) -> str:
        return TYPE_BASE + self.value.replace("_", "-")


class FieldError(BaseModel):
    field: str = Field(
        description="Where the problem is: a dotted path into the body, or a parameter's name."
    )
    message: str = Field(description="What is wrong with it; never the submitted value.")


class Problem(BaseModel):
    """An error answer (RFC 9457 problem details)."""

    type: str = Field(
        description="Identifies the kind of problem: "
        f"`{TYPE_BASE}` followed by `error` with hyphens."
    )
    title: str = Field(description="The HTTP status phrase.")
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="What happened in this case, in plain words.")
    instance: str = Field(description="The path of the request that got this answer.")
    error: ErrorCode
    errors: list[FieldError] | SkipJsonSchema[None] = Field(
        default=None, description="The fields at fault, when the problem lies in some."
    )


class ValidationProblem(Problem):
    """A 422: the request breaks the contract; `errors` names every field at fault."""

    errors: list[FieldError] = Field(min_length=1)


class ConflictProblem(Problem):
    """A 409: the request cannot apply to the resource as it is now."""

    reason: ConflictReason
