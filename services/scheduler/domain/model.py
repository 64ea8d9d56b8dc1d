"""The treatment plan aggregate: a client's plan and its sessions, changed as one document.

A plan holds every session it booked, so booking, completing, rescheduling and cancelling are
each one atomic update of one document, with the events they cause in its outbox.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from services.scheduler.domain.plans import PlanSpec
from shared.ids import Ids
from shared.vocabulary import Area, ClientId, Concern, Severity, SiteId, SkinSensitivity


class SessionStatus(StrEnum):
    SCHEDULED = "scheduled"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class PlanStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"


class Completion(BaseModel):
    """What the practitioner recorded at the end of a session."""

    model_config = ConfigDict(frozen=True)

    completed_at: datetime
    needle_depth_mm: float
    areas: list[Area]
    anesthetic_used: bool
    bleeding: bool
    practitioner_id: str
    notes: str | None = None


class Session(BaseModel):
    session_id: UUID
    sequence: int
    starts_at: datetime
    ends_at: datetime
    numbing_starts_at: datetime | None
    room: int
    reservation: str | None = Field(
        default=None, description="The token of the room time held for this session."
    )
    status: SessionStatus = SessionStatus.SCHEDULED
    completion: Completion | None = None
    cancel_reason: str | None = None
    last_event_id: UUID | None = Field(
        default=None, description="The latest event about this session: the cause of the next."
    )


class Plan(BaseModel):
    plan_id: UUID
    client_id: ClientId
    site_id: SiteId
    screening_id: UUID
    correlation_id: UUID
    areas: list[Area]
    concerns: list[Concern]
    severity: Severity
    skin_sensitivity: SkinSensitivity
    spec: PlanSpec
    status: PlanStatus = PlanStatus.ACTIVE
    sessions: list[Session]
    version: int = 1
    created_at: datetime

    def session(self, session_id: UUID) -> Session:
        for session in self.sessions:
            if session.session_id == session_id:
                return session
        raise KeyError(str(session_id))

    def previous(self, session: Session) -> Session | None:
        """The latest session before this one that was not cancelled."""
        earlier = [
            s
            for s in self.sessions
            if s.sequence < session.sequence and s.status is not SessionStatus.CANCELLED
        ]
        return max(earlier, key=lambda s: s.sequence, default=None)

    def is_last(self, session: Session) -> bool:
        return session.sequence >= self.spec.total_sessions


def plan_id_for(ids: Ids, screening_id: UUID) -> UUID:
    """One plan per passed screening, whatever the number of deliveries of its event."""
    return ids.uuid("plan", screening_id)


def session_id_for(ids: Ids, plan_id: UUID, sequence: int) -> UUID:
    return ids.uuid("session", plan_id, sequence)


def local_midnight(day: date, timezone: str) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=ZoneInfo(timezone)).astimezone(UTC)


def next_session_earliest(
    after: datetime, spec: PlanSpec, timezone: str, *, min_interval_days: int
) -> date | None:
    """The first local day the next session may take place; None when none follows."""
    if spec.interval_days is None:
        return None
    days = max(spec.interval_days, min_interval_days)
    return after.astimezone(ZoneInfo(timezone)).date() + timedelta(days=days)
