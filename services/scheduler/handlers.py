"""What the scheduler does on each event and request: load, apply the rules, save with events."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter
from pymongo.asynchronous.collection import AsyncCollection

from services.scheduler.adapters.plans import PlanRepository
from services.scheduler.adapters.rooms import RoomBlocks
from services.scheduler.adapters.sites import SiteRepository
from services.scheduler.commands import CancelSession, CompleteSession, RescheduleSession
from services.scheduler.domain.model import (
    Completion,
    Plan,
    PlanStatus,
    Session,
    SessionStatus,
    local_midnight,
    next_session_earliest,
    plan_id_for,
    session_id_for,
)
from services.scheduler.domain.plans import PlanInput, PlanRules, PlanSpec, plan_for
from services.scheduler.domain.slots import SiteHours, Slot, SlotProblem, check_slot, find_slot
from shared.access import Principal
from shared.audit import AuditAction, audit_record
from shared.audit import entry as audit_entry
from shared.consumer import PermanentError
from shared.envelope import Event, Record, build
from shared.errors import FieldRejected, NotFound
from shared.events import (
    ScreeningPassed,
    SessionCancelled,
    SessionCompleted,
    SessionScheduled,
    SiteUpdated,
)
from shared.ids import Ids
from shared.locks import Locks, LockTimeout
from shared.topics import Topics

BOOKINGS = Counter("clinicflow_sessions_booked_total", "Sessions booked, by how.", ["how"])
SEARCH_WINDOW = timedelta(days=14)
RESERVATION_GRACE = timedelta(minutes=10)
SOURCE = "scheduler"


class Conflict(Exception):
    """The request cannot apply to the current state (HTTP 409); `reason` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class SchedulerContext:
    locks: Locks
    plans: PlanRepository
    sites: SiteRepository
    rooms: RoomBlocks
    rules: PlanRules
    erased: AsyncCollection[dict[str, Any]]
    ids: Ids
    topic_prefix: str
    notify_relay: Callable[[], None]
    lead: timedelta = timedelta(hours=24)
    horizon: timedelta = timedelta(days=180)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def audit(
        self, actor: Principal, action: AuditAction, kind: str, resource_id: str, site_id: str
    ) -> Record:
        """An audit entry travelling in the same outbox write as the change it records."""
        item = audit_entry(actor, action, kind, resource_id, site_id, at=self.clock())
        return audit_record(item, Topics(self.topic_prefix).audit)

    def event(self, data: SessionScheduled | SessionCompleted | SessionCancelled | SiteUpdated,
              *, correlation: uuid.UUID | None, cause: uuid.UUID | None) -> Record:  # fmt: skip
        return build(
            data,
            source=SOURCE,
            prefix=self.topic_prefix,
            correlation_id=correlation,
            causation_id=cause,
        )


def hours_of(site: SiteUpdated) -> SiteHours:
    return SiteHours(timezone=site.timezone, opening_hours=site.opening_hours, rooms=site.rooms)


async def book(
    ctx: SchedulerContext, site: SiteUpdated, session_id: uuid.UUID, spec: PlanSpec,
    not_before: datetime,
) -> tuple[Slot, str] | None:  # fmt: skip
    """The earliest free slot from `not_before`, reserved; searched two weeks at a time so each
    round reads only the reservations of that fortnight."""
    numbing = ctx.rules.numbing_minutes if spec.numbing else 0
    window_start = not_before
    deadline = not_before + ctx.horizon
    while window_start < deadline:
        for _ in range(20):
            busy = await ctx.rooms.busy(
                site.site_id,
                window_start - timedelta(hours=3),
                window_start + SEARCH_WINDOW + timedelta(days=1),
            )
            slot = find_slot(
                hours_of(site),
                busy,
                not_before=window_start,
                session_minutes=ctx.rules.session_minutes,
                numbing_minutes=numbing,
                horizon_days=SEARCH_WINDOW.days,
            )
            if slot is None:
                break
            token = await ctx.rooms.reserve(site.site_id, slot, session_id)
            if token is not None:
                return slot, token
        window_start += SEARCH_WINDOW
    return None


def session_from(slot: Slot, session_id: uuid.UUID, sequence: int, token: str) -> Session:
    return Session(
        session_id=session_id,
        sequence=sequence,
        starts_at=slot.starts_at,
        ends_at=slot.ends_at,
        numbing_starts_at=slot.numbing_starts_at,
        room=slot.room,
        reservation=token,
    )


def scheduled_event(plan: Plan, session: Session) -> SessionScheduled:
    return SessionScheduled(
        session_id=session.session_id,
        plan_id=plan.plan_id,
        client_id=plan.client_id,
        site_id=plan.site_id,
        sequence=session.sequence,
        total_sessions=plan.spec.total_sessions,
        starts_at=session.starts_at,
        ends_at=session.ends_at,
        numbing_starts_at=session.numbing_starts_at,
        needle_depth_mm=plan.spec.needle_depth_mm,
    )


async def on_screening_passed(ctx: SchedulerContext, event: Event) -> None:
    """Create the plan of a passed screening and book its first session."""
    passed = event.data
    assert isinstance(passed, ScreeningPassed)
    plan_id = plan_id_for(ctx.ids, passed.screening_id)
    if await ctx.plans.get(plan_id) is not None:
        return
    if await is_erased(ctx, passed.client_id, passed.screened_at):
        return
    site = await ctx.sites.get(passed.site_id)
    if site is None:
        raise PermanentError(f"unknown site {passed.site_id!r}")
    now = ctx.clock()
    if passed.valid_until < now:
        raise PermanentError(f"screening {passed.screening_id} expired on {passed.valid_until}")
    spec = plan_for(
        PlanInput(
            areas=passed.areas,
            concerns=passed.concerns,
            severity=passed.severity,
            skin_sensitivity=passed.skin_sensitivity,
        ),
        ctx.rules,
    )
    session_id = session_id_for(ctx.ids, plan_id, 1)
    booked = await book(ctx, site, session_id, spec, now + ctx.lead)
    if booked is None:
        raise PermanentError(f"no free slot at {site.site_id} within {ctx.horizon.days} days")
    slot, token = booked
    plan = Plan(
        plan_id=plan_id,
        client_id=passed.client_id,
        site_id=passed.site_id,
        screening_id=passed.screening_id,
        correlation_id=event.envelope.correlationid,
        areas=passed.areas,
        concerns=passed.concerns,
        severity=passed.severity,
        skin_sensitivity=passed.skin_sensitivity,
        spec=spec,
        sessions=[session_from(slot, session_id, 1, token)],
        created_at=now,
    )
    record = ctx.event(
        scheduled_event(plan, plan.sessions[0]),
        correlation=plan.correlation_id,
        cause=event.envelope.id,
    )
    plan.sessions[0].last_event_id = uuid.UUID(record.event_id)
    if not await ctx.plans.add(plan, [record]):
        await ctx.rooms.release_token(token)
        return
    BOOKINGS.labels("first").inc()
    ctx.notify_relay()


@contextlib.asynccontextmanager
async def _locked(
    ctx: SchedulerContext, session_id: uuid.UUID
) -> AsyncIterator[tuple[Plan, Session, SiteUpdated]]:
    """The session's plan, read and held under the plan's lease until the block ends."""
    found = await ctx.plans.by_session(session_id)
    if found is None:
        raise NotFound(f"no session {session_id}")
    async with ctx.locks.hold(ctx.plans.lease(found.plan_id)):
        plan = await ctx.plans.get(found.plan_id)
        assert plan is not None
        site = await ctx.sites.get(plan.site_id)
        if site is None:
            raise NotFound(f"the site {plan.site_id!r} of this session is unknown")
        yield plan, plan.session(session_id), site


def _require_scheduled(session: Session) -> None:
    if session.status is SessionStatus.COMPLETED:
        raise Conflict("already_completed", "this session is already completed")
    if session.status is SessionStatus.CANCELLED:
        raise Conflict("cancelled", "this session was cancelled")


async def complete_session(
    ctx: SchedulerContext, session_id: uuid.UUID, command: CompleteSession, actor: Principal
) -> Plan:
    """Record the session, publish `session_completed` once, and book the next session."""
    async with _locked(ctx, session_id) as (plan, session, site):
        _require_scheduled(session)
        now = ctx.clock()
        completed_at = (command.completed_at or now).astimezone(UTC).replace(microsecond=0)
        if completed_at > now + timedelta(minutes=5):
            raise FieldRejected("completed_at", "a session cannot be completed in the future")
        earliest = None
        if not plan.is_last(session):
            earliest = next_session_earliest(
                completed_at,
                plan.spec,
                site.timezone,
                min_interval_days=ctx.rules.min_interval_days,
            )
        completed = ctx.event(
            SessionCompleted(
                session_id=session.session_id,
                plan_id=plan.plan_id,
                client_id=plan.client_id,
                site_id=plan.site_id,
                timezone=site.timezone,
                sequence=session.sequence,
                total_sessions=plan.spec.total_sessions,
                completed_at=completed_at,
                needle_depth_mm=command.needle_depth_mm,
                areas=command.areas,
                anesthetic_used=command.anesthetic_used,
                bleeding=command.bleeding,
                next_session_earliest=earliest,
            ),
            correlation=plan.correlation_id,
            cause=session.last_event_id,
        )
        session.status = SessionStatus.COMPLETED
        session.completion = Completion(
            completed_at=completed_at,
            needle_depth_mm=command.needle_depth_mm,
            areas=command.areas,
            anesthetic_used=command.anesthetic_used,
            bleeding=command.bleeding,
            practitioner_id=command.practitioner_id,
            notes=command.notes,
        )
        session.last_event_id = uuid.UUID(completed.event_id)
        records = [completed]
        if earliest is None:
            plan.status = PlanStatus.COMPLETED
        else:
            next_id = session_id_for(ctx.ids, plan.plan_id, session.sequence + 1)
            not_before = max(now + ctx.lead, local_midnight(earliest, site.timezone))
            booked = await book(ctx, site, next_id, plan.spec, not_before)
            if booked is None:
                raise Conflict("no_free_slot", "no free slot for the next session was found")
            upcoming = session_from(booked[0], next_id, session.sequence + 1, booked[1])
            scheduled = ctx.event(
                scheduled_event(plan, upcoming),
                correlation=plan.correlation_id,
                cause=uuid.UUID(completed.event_id),
            )
            upcoming.last_event_id = uuid.UUID(scheduled.event_id)
            plan.sessions.append(upcoming)
            records.append(scheduled)
            BOOKINGS.labels("next").inc()
        records.append(
            ctx.audit(
                actor, AuditAction.SESSION_COMPLETED, "session", str(session_id), site.site_id
            )
        )
        await ctx.plans.save(plan, records)
        await ctx.rooms.release(session.session_id, from_=completed_at)
    ctx.notify_relay()
    return plan


async def reschedule_session(
    ctx: SchedulerContext, session_id: uuid.UUID, command: RescheduleSession
) -> Plan:
    """Move a booked session, keeping the spacing, the opening hours and one client per room."""
    async with _locked(ctx, session_id) as (plan, session, site):
        _require_scheduled(session)
        previous = plan.previous(session)
        if previous is not None:
            anchor = previous.completion.completed_at if previous.completion else previous.starts_at
            first_day = next_session_earliest(
                anchor, plan.spec, site.timezone, min_interval_days=ctx.rules.min_interval_days
            )
            if first_day is not None and command.starts_at < local_midnight(
                first_day, site.timezone
            ):
                raise Conflict(
                    "too_close_to_previous",
                    f"the previous session was on {anchor.date()}; this one may not be before "
                    f"{first_day}",
                )
        numbing = ctx.rules.numbing_minutes if plan.spec.numbing else 0
        starts_at = command.starts_at.astimezone(UTC)
        busy = await ctx.rooms.busy(
            site.site_id,
            starts_at - timedelta(hours=3),
            starts_at + timedelta(hours=3),
            ignore=session.session_id,
        )
        checked = check_slot(
            hours_of(site),
            busy,
            starts_at,
            not_before=ctx.clock(),
            session_minutes=ctx.rules.session_minutes,
            numbing_minutes=numbing,
        )
        if isinstance(checked, SlotProblem):
            raise Conflict(checked.value, _PROBLEMS[checked])
        token = await ctx.rooms.reserve(site.site_id, checked, session.session_id)
        if token is None:
            raise Conflict(SlotProblem.ROOM_TAKEN.value, _PROBLEMS[SlotProblem.ROOM_TAKEN])
        moved = session_from(checked, session.session_id, session.sequence, token)
        record = ctx.event(
            scheduled_event(plan, moved),
            correlation=plan.correlation_id,
            cause=session.last_event_id,
        )
        moved.last_event_id = uuid.UUID(record.event_id)
        plan.sessions[plan.sessions.index(session)] = moved
        await ctx.plans.save(plan, [record])
    ctx.notify_relay()
    return plan


def _cancel(ctx: SchedulerContext, plan: Plan, session: Session, reason: str) -> Record:
    """Mark a scheduled session cancelled; the `session_cancelled` record to save with it."""
    record = ctx.event(
        SessionCancelled(
            session_id=session.session_id,
            plan_id=plan.plan_id,
            client_id=plan.client_id,
            site_id=plan.site_id,
            reason=reason,
        ),
        correlation=plan.correlation_id,
        cause=session.last_event_id,
    )
    session.status = SessionStatus.CANCELLED
    session.cancel_reason = reason
    session.last_event_id = uuid.UUID(record.event_id)
    return record


async def cancel_session(
    ctx: SchedulerContext, session_id: uuid.UUID, command: CancelSession
) -> Plan:
    async with _locked(ctx, session_id) as (plan, session, _):
        _require_scheduled(session)
        await ctx.plans.save(plan, [_cancel(ctx, plan, session, command.reason)])
        await ctx.rooms.release(session.session_id)
    ctx.notify_relay()
    return plan


ERASED = "client_erased"


async def on_client_erased(ctx: SchedulerContext, client_id: str) -> None:
    """A contact tombstone: cancel the client's future sessions, free their rooms, drop notes.

    The client is remembered as erased first, so a passed screening of theirs that is still in
    flight books nothing afterwards (SPEC section 6).
    """
    await ctx.erased.update_one(
        {"_id": client_id}, {"$setOnInsert": {"erased_at": ctx.clock()}}, upsert=True
    )
    for found in await ctx.plans.for_client(client_id):
        cancelled: list[Session] = []
        async with ctx.locks.hold(ctx.plans.lease(found.plan_id)):
            plan = await ctx.plans.get(found.plan_id)
            assert plan is not None
            records: list[Record] = []
            for session in plan.sessions:
                if session.completion is not None and session.completion.notes is not None:
                    session.completion = session.completion.model_copy(update={"notes": None})
                if session.status is SessionStatus.SCHEDULED:
                    records.append(_cancel(ctx, plan, session, ERASED))
                    cancelled.append(session)
            await ctx.plans.save(plan, records)
        for session in cancelled:
            await ctx.rooms.release(session.session_id)
    ctx.notify_relay()


async def is_erased(ctx: SchedulerContext, client_id: str, since: datetime) -> bool:
    """Whether the client was erased after `since` (a later screening un-erases them)."""
    marker = await ctx.erased.find_one({"_id": client_id})
    return marker is not None and marker["erased_at"] >= since


async def reap_reservations(ctx: SchedulerContext) -> int:
    """Give back room time that a scheduler reserved and then died before recording."""
    return await ctx.rooms.reap(
        ctx.plans.records_reservation, older_than=ctx.clock() - RESERVATION_GRACE
    )


async def put_site(ctx: SchedulerContext, site: SiteUpdated, actor: Principal) -> bool:
    """Store a site and publish it, with its audit entry; True when it is new."""
    records = [
        ctx.event(site, correlation=None, cause=None),
        ctx.audit(actor, AuditAction.SITE_CHANGED, "site", site.site_id, site.site_id),
    ]
    created = await ctx.sites.put(site, records)
    ctx.notify_relay()
    return created


async def seed_site(ctx: SchedulerContext, site: SiteUpdated) -> bool:
    """Create a site of the sites file unless one of that id exists; True when created."""
    record = ctx.event(site, correlation=None, cause=None)
    created = await ctx.sites.put(site, [record], only_if_new=True)
    if created:
        ctx.notify_relay()
    return created


class SiteSeeder:
    """Creates the sites file's missing sites once the service is connected.

    A worker rather than a start step: a site's lease may still be held by a process that
    stopped a moment ago, and waiting for it must not hold back the rest of the start. `/readyz`
    waits for `done`, so a ready scheduler has published every site of the file.
    """

    def __init__(self, ctx: SchedulerContext, sites: list[SiteUpdated]) -> None:
        self.ctx = ctx
        self.pending = list(sites)
        self.done = not sites

    async def run(self) -> None:
        while self.pending:
            try:
                await seed_site(self.ctx, self.pending[0])
                self.pending.pop(0)
            except LockTimeout:
                await asyncio.sleep(1.0)
        self.done = True


async def get_site(ctx: SchedulerContext, site_id: str) -> SiteUpdated:
    site = await ctx.sites.get(site_id)
    if site is None:
        raise NotFound(f"no site {site_id}")
    return site


_PROBLEMS = {
    SlotProblem.CLOSED: "the site is closed then (numbing time included)",
    SlotProblem.ROOM_TAKEN: "every room is taken then (numbing time included)",
    SlotProblem.TOO_SOON: "that time is already past",
    SlotProblem.MISALIGNED: "sessions start on a quarter hour",
}
