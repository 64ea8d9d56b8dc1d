"""The `data` of every clinicflow event (SPEC section 2), one pydantic model per topic.

Models are strict about the fields they name (ids, enums, aware UTC datetimes) and tolerant of
the ones they do not: a reader ignores a field added by a newer producer (SPEC section 8), so
an optional addition never sends an older consumer's events to the DLQ during a rolling
upgrade. The published schemas say so (`additionalProperties: true`). Producers build events
from these models only, so nothing the contract does not name is ever published. Workflow
events carry ids and reason codes only: health answers never appear here, and contact
details only in `ClientContact`.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    model_validator,
)

from shared.vocabulary import (
    AftercareStep,
    Area,
    ClientId,
    ClockTime,
    Concern,
    IanaTimezone,
    Locale,
    NeedleDepthMm,
    ReasonCode,
    Severity,
    SiteId,
    SkinSensitivity,
    UtcDatetime,
    Weekday,
)

TOLERANT = ConfigDict(extra="ignore", frozen=True, json_schema_extra={"additionalProperties": True})
"""Unknown fields are ignored on reading, and the schemas allow them (a tolerant reader)."""


class EventData(BaseModel):
    model_config = TOLERANT


class ScreeningPassed(EventData):
    """A client may be treated: what the scheduler needs to build a plan."""

    screening_id: UUID
    client_id: ClientId
    site_id: SiteId
    areas: list[Area] = Field(min_length=1)
    concerns: list[Concern] = Field(min_length=1)
    severity: Severity
    skin_sensitivity: SkinSensitivity
    policy_version: str = Field(min_length=1)
    screened_at: UtcDatetime
    valid_until: UtcDatetime


class ScreeningFailed(EventData):
    """A client may not be treated now (`deferred`) or at all (`declined`); codes only."""

    screening_id: UUID
    client_id: ClientId
    site_id: SiteId
    outcome: Literal["deferred", "declined"]
    reasons: list[ReasonCode] = Field(min_length=1)
    recheck_after: date | None
    policy_version: str = Field(min_length=1)
    screened_at: UtcDatetime


class SessionScheduled(EventData):
    session_id: UUID
    plan_id: UUID
    client_id: ClientId
    site_id: SiteId
    sequence: int = Field(ge=1)
    total_sessions: int = Field(ge=1)
    starts_at: UtcDatetime
    ends_at: UtcDatetime
    numbing_starts_at: UtcDatetime | None = None
    needle_depth_mm: NeedleDepthMm

    @model_validator(mode="after")
    def _consistent(self) -> SessionScheduled:
        if self.sequence > self.total_sessions:
            raise ValueError("sequence cannot exceed total_sessions")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.numbing_starts_at is not None and self.numbing_starts_at >= self.starts_at:
            raise ValueError("numbing_starts_at must be before starts_at")
        return self


class SessionCancelled(EventData):
    session_id: UUID
    plan_id: UUID
    client_id: ClientId
    site_id: SiteId
    reason: str = Field(min_length=1, max_length=500)


class SessionCompleted(EventData):
    """A session took place: what the notifier needs to build its aftercare timeline."""

    session_id: UUID
    plan_id: UUID
    client_id: ClientId
    site_id: SiteId
    timezone: IanaTimezone
    sequence: int = Field(ge=1)
    total_sessions: int = Field(ge=1)
    completed_at: UtcDatetime
    needle_depth_mm: NeedleDepthMm
    areas: list[Area] = Field(min_length=1)
    anesthetic_used: bool
    bleeding: bool
    next_session_earliest: date | None


class AftercareDue(EventData):
    aftercare_id: UUID
    client_id: ClientId
    site_id: SiteId
    session_id: UUID
    step: AftercareStep
    due_at: UtcDatetime
    locale: Locale
    title: str = Field(min_length=1)
    instructions: list[str] = Field(min_length=1)


def _opens_before_closing(span: list[str]) -> list[str]:
    opens, closes = span
    if opens >= closes:
        raise ValueError(f"{opens} is not before {closes}")
    return span


OpeningSpan = Annotated[
    list[ClockTime], Field(min_length=2, max_length=2), AfterValidator(_opens_before_closing)
]
"""One day's `[opens, closes]`; checked on the type so that requests and events agree."""

OpeningHours = dict[Weekday, OpeningSpan]


class SiteUpdated(EventData):
    """The full state of one site; the latest record per site_id is the truth (compacted)."""

    site_id: SiteId
    name: str = Field(min_length=1, max_length=200)
    timezone: IanaTimezone
    opening_hours: OpeningHours
    rooms: int = Field(ge=1, le=100)


Phone = Annotated[
    str, StringConstraints(pattern=r"^\+[1-9]\d{6,14}$"), Field(examples=["+33600000000"])
]


class ClientContact(EventData):
    """How to reach a client; compacted, and a tombstone (null value) erases it."""

    client_id: ClientId
    site_id: SiteId
    full_name: str = Field(min_length=1, max_length=200)
    email: EmailStr | None
    phone: Phone | None
    locale: Locale


class EventKind(StrEnum):
    """Topic names without the deployment's prefix (`clinic.` by default)."""

    SCREENING_PASSED = "screening_passed"
    SCREENING_FAILED = "screening_failed"
    SESSION_SCHEDULED = "session_scheduled"
    SESSION_CANCELLED = "session_cancelled"
    SESSION_COMPLETED = "session_completed"
    AFTERCARE_DUE = "aftercare_due"
    SITE_UPDATED = "site_updated"
    CLIENT_CONTACT = "client_contact"


EVENT_MODELS: dict[EventKind, type[EventData]] = {
    EventKind.SCREENING_PASSED: ScreeningPassed,
    EventKind.SCREENING_FAILED: ScreeningFailed,
    EventKind.SESSION_SCHEDULED: SessionScheduled,
    EventKind.SESSION_CANCELLED: SessionCancelled,
    EventKind.SESSION_COMPLETED: SessionCompleted,
    EventKind.AFTERCARE_DUE: AftercareDue,
    EventKind.SITE_UPDATED: SiteUpdated,
    EventKind.CLIENT_CONTACT: ClientContact,
}

PRODUCERS: dict[EventKind, str] = {
    EventKind.SCREENING_PASSED: "intake",
    EventKind.SCREENING_FAILED: "intake",
    EventKind.CLIENT_CONTACT: "intake",
    EventKind.SESSION_SCHEDULED: "scheduler",
    EventKind.SESSION_CANCELLED: "scheduler",
    EventKind.SESSION_COMPLETED: "scheduler",
    EventKind.SITE_UPDATED: "scheduler",
    EventKind.AFTERCARE_DUE: "notifier",
}

COMPACTED: frozenset[EventKind] = frozenset({EventKind.SITE_UPDATED, EventKind.CLIENT_CONTACT})


def kind_of(data: EventData) -> EventKind:
    for kind, model in EVENT_MODELS.items():
        if type(data) is model:
            return kind
    raise TypeError(f"{type(data).__name__} is not a registered event")
