"""The treatment plan aggregate: a client's plan and its sessions, changed as one document.

A plan holds every session it booked, so booking, completing, rescheduling and cancelling are
each one atomic update of one document. Each of those is a method here that checks the plan's
rules, changes it and records the event it causes (`shared.aggregate`); handlers only find the
room time, call the method and commit.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from services.scheduler.domain.plans import PlanSpec
from shared.aggregate import Aggregate
from shared.errors import Conflict, ConflictReason
from shared.events import (
    ScreeningPassed,
    SessionCancelled,
    SessionCompleted,
    SessionScheduled,
    SiteUpdated,
)
from shared.ids import Ids
from shared.vocabulary import Area, ClientId, Concern, Severity, SiteId, SkinSensitivity

ERASED = "client_erased"


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


class Plan(Aggregate):
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
    created_at: datetime

    @classmethod
    def open(
        cls,
        plan_id: UUID,
        passed: ScreeningPassed,
        spec: PlanSpec,
        first: Session,
        *,
        correlation_id: UUID,
        cause: UUID,
        now: datetime,
    ) -> Plan:
        """The plan of a passed screening, with its first session booked."""
        plan = cls(
            plan_id=plan_id,
            client_id=passed.client_id,
            site_id=passed.site_id,
            screening_id=passed.screening_id,
            correlation_id=correlation_id,
            areas=passed.areas,
            concerns=passed.concerns,
            severity=passed.severity,
            skin_sensitivity=passed.skin_sensitivity,
            spec=spec,
            sessions=[],
            created_at=now,
        )
        plan._book(first, cause=cause)
        return plan

    @property
    def finished(self) -> bool:
        """Completed, or nothing left booked and nothing to book: it changes no more."""
        return self.status is PlanStatus.COMPLETED or all(
            s.status is SessionStatus.CANCELLED for s in self.sessions
        )

    def session(self, session_id: UUID) -> Session:
        for session in self.sessions:
            if session.session_id == session_id:
                return session
        raise KeyError(str(session_id))

    def scheduled(self, session_id: UUID) -> Session:
        """The session, which must still be booked (not completed, not cancelled)."""
        session = self.session(session_id)
        if session.status is SessionStatus.COMPLETED:
            raise Conflict(ConflictReason.ALREADY_COMPLETED, "this session is already completed")
        if session.status is SessionStatus.CANCELLED:
            raise Conflict(ConflictReason.CANCELLED, "this session was cancelled")
        return session

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

    def complete(
        self,
        session: Session,
        completion: Completion,
        *,
        timezone: str,
        earliest: date | None,
        upcoming: Session | None,
    ) -> None:
        """Record the session; book `upcoming` next, or close the plan when none follows."""
        event = SessionCompleted(
            session_id=session.session_id,
            plan_id=self.plan_id,
            client_id=self.client_id,
            site_id=self.site_id,
            timezone=timezone,
            sequence=session.sequence,
            total_sessions=self.spec.total_sessions,
            completed_at=completion.completed_at,
            needle_depth_mm=completion.needle_depth_mm,
            areas=completion.areas,
            anesthetic_used=completion.anesthetic_used,
            bleeding=completion.bleeding,
            next_session_earliest=earliest,
        )
        session.status = SessionStatus.COMPLETED
        session.completion = completion
        session.last_event_id = self._record(event, session.last_event_id)
        if upcoming is None:
            self.status = PlanStatus.COMPLETED
        else:
            self._book(upcoming, cause=session.last_event_id)

    def move(self, session: Session, moved: Session) -> None:
        """Put a booked session at the new time `moved` holds."""
        self.sessions[self.sessions.index(session)] = moved
        self._scheduled(moved, cause=session.last_event_id)

    def cancel(self, session: Session, reason: str) -> None:
        event = SessionCancelled(
            session_id=session.session_id,
            plan_id=self.plan_id,
            client_id=self.client_id,
            site_id=self.site_id,
            reason=reason,
        )
        session.status = SessionStatus.CANCELLED
        session.cancel_reason = reason
        session.last_event_id = self._record(event, session.last_event_id)

    def erase(self) -> list[Session]:
        """The client was erased: cancel what is still booked, drop free-text notes."""
        cancelled = []
        for session in self.sessions:
            if session.completion is not None and session.completion.notes is not None:
                session.completion = session.completion.model_copy(update={"notes": None})
            if session.status is SessionStatus.SCHEDULED:
                self.cancel(session, ERASED)
                cancelled.append(session)
        return cancelled

    def _book(self, session: Session, *, cause: UUID | None) -> None:
        self.sessions.append(session)
        self._scheduled(session, cause=cause)

    def _scheduled(self, session: Session, *, cause: UUID | None) -> None:
        event = SessionScheduled(
            session_id=session.session_id,
            plan_id=self.plan_id,
            client_id=self.client_id,
            site_id=self.site_id,
            sequence=session.sequence,
            total_sessions=self.spec.total_sessions,
            starts_at=session.starts_at,
            ends_at=session.ends_at,
            numbing_starts_at=session.numbing_starts_at,
            needle_depth_mm=self.spec.needle_depth_mm,
        )
        session.last_event_id = self._record(event, cause)

    def _record(
        self, event: SessionScheduled | SessionCompleted | SessionCancelled, cause: UUID | None
    ) -> UUID:
        return self.record(event, correlation=self.correlation_id, cause=cause)


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


class Site(Aggregate):
    """A site of the chain as the scheduler keeps it; every change is published."""

    site_id: SiteId
    site: SiteUpdated

    def update(self, site: SiteUpdated) -> None:
        self.site = site
        self.record(site, correlation=None, cause=None)
