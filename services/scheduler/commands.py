"""The scheduler's HTTP contract (SPEC section 4): request bodies and the views it returns."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool

from services.scheduler.domain.model import Plan, PlanStatus, Session, SessionStatus
from shared.events import OpeningHours
from shared.vocabulary import Area, ClientId, IanaTimezone, NeedleDepthMm, SiteId


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteIn(Strict):
    """`PUT /v1/sites/{site_id}`; a weekday left out of `opening_hours` is closed."""

    name: str = Field(min_length=1, max_length=200)
    timezone: IanaTimezone
    opening_hours: OpeningHours = Field(examples=[{"mon": ["09:00", "18:00"]}])
    rooms: int = Field(ge=1, le=100, description="Sessions the site can hold at once.")


class CompleteSession(Strict):
    needle_depth_mm: NeedleDepthMm
    areas: list[Area] = Field(min_length=1)
    anesthetic_used: StrictBool
    bleeding: StrictBool
    practitioner_id: str = Field(min_length=1, max_length=64)
    completed_at: AwareDatetime | None = Field(
        default=None, description="Defaults to now; may be before the booked time."
    )
    notes: str | None = Field(default=None, max_length=2000)


class RescheduleSession(Strict):
    starts_at: AwareDatetime


class CancelSession(Strict):
    reason: str = Field(min_length=1, max_length=500)


class SessionView(BaseModel):
    session_id: UUID
    plan_id: UUID
    client_id: ClientId
    site_id: SiteId
    sequence: int
    total_sessions: int
    status: SessionStatus
    starts_at: datetime
    ends_at: datetime
    numbing_starts_at: datetime | None
    room: int
    needle_depth_mm: float
    completed_at: datetime | None
    cancel_reason: str | None

    @classmethod
    def of(cls, plan: Plan, session: Session) -> SessionView:
        return cls(
            session_id=session.session_id,
            plan_id=plan.plan_id,
            client_id=plan.client_id,
            site_id=plan.site_id,
            sequence=session.sequence,
            total_sessions=plan.spec.total_sessions,
            status=session.status,
            starts_at=session.starts_at,
            ends_at=session.ends_at,
            numbing_starts_at=session.numbing_starts_at,
            room=session.room,
            needle_depth_mm=(
                session.completion.needle_depth_mm
                if session.completion
                else plan.spec.needle_depth_mm
            ),
            completed_at=session.completion.completed_at if session.completion else None,
            cancel_reason=session.cancel_reason,
        )


class PlanView(BaseModel):
    plan_id: UUID
    client_id: ClientId
    site_id: SiteId
    screening_id: UUID
    status: PlanStatus
    total_sessions: int
    interval_days: int | None
    needle_depth_mm: float
    numbing: bool
    maintenance_after_days: int | None
    created_at: datetime
    sessions: list[SessionView]

    @classmethod
    def of(cls, plan: Plan) -> PlanView:
        return cls(
            plan_id=plan.plan_id,
            client_id=plan.client_id,
            site_id=plan.site_id,
            screening_id=plan.screening_id,
            status=plan.status,
            total_sessions=plan.spec.total_sessions,
            interval_days=plan.spec.interval_days,
            needle_depth_mm=plan.spec.needle_depth_mm,
            numbing=plan.spec.numbing,
            maintenance_after_days=plan.spec.maintenance_after_days,
            created_at=plan.created_at,
            sessions=[SessionView.of(plan, s) for s in plan.sessions],
        )
