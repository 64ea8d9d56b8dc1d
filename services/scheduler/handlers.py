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

from services.scheduler.adapters.plans import PlanStore
from services.scheduler.adapters.rooms import Rooms
from services.scheduler.adapters.sites import SiteStore
from services.scheduler.commands import CancelSession, CompleteSession, RescheduleSession
from services.scheduler.desk import BookingDesk, hours_of, session_from
from services.scheduler.domain.model import (
    Completion,
    Plan,
    Session,
    Site,
    local_midnight,
    next_session_earliest,
    plan_id_for,
    session_id_for,
)
from services.scheduler.domain.plans import PlanInput, PlanRules, PlanSpec, plan_for
from services.scheduler.domain.slots import SlotProblem, check_slot
from services.scheduler.domain.stalls import stall
from shared.access import Principal
from shared.audit import AuditAction, audit_record
from shared.audit import entry as audit_entry
from shared.consumer import PermanentError
from shared.envelope import Event, Record
from shared.errors import Conflict, ConflictReason, FieldRejected, NotFound
from shared.events import ScreeningPassed, SiteUpdated
from shared.ids import Ids
from shared.locks import LockTimeout
from shared.ops import StalledPlan
from shared.outbox import lease_name
from shared.topics import Topics
from shared.uow import UnitOfWork

BOOKINGS = Counter("clinicflow_sessions_booked_total", "Sessions booked, by how.", ["how"])
COMPLETIONS = Counter("clinicflow_sessions_completed_total", "Sessions completed.")
CANCELLATIONS = Counter(
    "clinicflow_sessions_cancelled_total",
    "Booked sessions cancelled, by why: on request, or because the client was erased.",
    ["why"],
)
RESERVATION_GRACE = timedelta(minutes=10)


@dataclass
class SchedulerContext:
    uow: UnitOfWork
    plans: PlanStore
    sites: SiteStore
    rooms: Rooms
    desk: BookingDesk
    rules: PlanRules
    erased: AsyncCollection[dict[str, Any]]
    ids: Ids
    topic_prefix: str
    concurrency: int = 16
    lead: timedelta = timedelta(hours=24)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    @property
    def horizon(self) -> timedelta:
        return self.desk.horizon

    def audit(
        self, actor: Principal, action: AuditAction, kind: str, resource_id: str, site_id: str
    ) -> Record:
        """An audit entry travelling in the same outbox write as the change it records."""
        item = audit_entry(actor, action, kind, resource_id, site_id, at=self.clock())
        return audit_record(item, Topics(self.topic_prefix).audit)


async def book(
    ctx: SchedulerContext, site: SiteUpdated, plan_id: uuid.UUID, sequence: int,
    spec: PlanSpec, not_before: datetime,
) -> Session | None:  # fmt: skip
    """The earliest free slot from `not_before`, reserved (`services.scheduler.desk`)."""
    session_id = session_id_for(ctx.ids, plan_id, sequence)
    await ctx.plans.note_session(session_id, plan_id)
    numbing = ctx.rules.numbing_minutes if spec.numbing else 0
    return await ctx.desk.book(site, plan_id, session_id, sequence, numbing, not_before)


async def on_screening_passed(ctx: SchedulerContext, event: Event) -> None:
    """Create the plan of a passed screening and book its first session."""
    passed = event.data
    assert isinstance(passed, ScreeningPassed)
    plan_id = plan_id_for(ctx.ids, passed.screening_id)
    if not await ctx.plans.claim([str(plan_id)]):
        return  # planned already
    if await is_erased(ctx, passed.client_id, passed.screened_at):
        return
    site = await ctx.sites.site(passed.site_id)
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
    first = await book(ctx, site, plan_id, 1, spec, now + ctx.lead)
    if first is None:
        raise PermanentError(f"no free slot at {site.site_id} within {ctx.horizon.days} days")
    plan = Plan.open(
        plan_id, passed, spec, first,
        correlation_id=event.envelope.correlationid, cause=event.envelope.id, now=now,
    )  # fmt: skip
    if not await ctx.uow.add(ctx.plans, plan, claimed=True):
        return  # booked meanwhile by another replica: the reaper gives this time back
    await ctx.rooms.confirm(first.reservation)
    BOOKINGS.labels("first").inc()


@contextlib.asynccontextmanager
async def _changing(ctx: SchedulerContext, session_id: uuid.UUID) -> AsyncIterator[Plan]:
    """The session's plan, held for a change; a finished plan answers why it cannot change."""
    found = await ctx.plans.by_session(session_id)
    if found is None:
        raise NotFound(f"no session {session_id}")
    async with ctx.uow.change(ctx.plans, str(found.plan_id)) as plan:
        if plan is None:  # finished meanwhile: each session is completed or cancelled
            found.scheduled(session_id)
            raise NotFound(f"no session {session_id}")
        yield plan


async def _site_of(ctx: SchedulerContext, plan: Plan) -> SiteUpdated:
    site = await ctx.sites.site(plan.site_id)
    if site is None:
        raise NotFound(f"the site {plan.site_id!r} of this session is unknown")
    return site


async def complete_session(
    ctx: SchedulerContext, session_id: uuid.UUID, command: CompleteSession, actor: Principal
) -> Plan:
    """Record the session, publish `session_completed` once, and book the next session."""
    async with _changing(ctx, session_id) as plan:
        site = await _site_of(ctx, plan)
        session = plan.scheduled(session_id)
        now = ctx.clock()
        completed_at = (command.completed_at or now).astimezone(UTC).replace(microsecond=0)
        if completed_at > now + timedelta(minutes=5):
            raise FieldRejected("completed_at", "a session cannot be completed in the future")
        earliest = None
        if not plan.is_last(session):
            gap = ctx.rules.min_interval_days
            earliest = next_session_earliest(
                completed_at, plan.spec, site.timezone, min_interval_days=gap
            )
        upcoming = None
        if earliest is not None:
            not_before = max(now + ctx.lead, local_midnight(earliest, site.timezone))
            upcoming = await book(
                ctx, site, plan.plan_id, session.sequence + 1, plan.spec, not_before
            )
            if upcoming is None:
                raise Conflict(
                    ConflictReason.NO_FREE_SLOT, "no free slot for the next session was found"
                )
            BOOKINGS.labels("next").inc()
        completion = Completion(
            completed_at=completed_at,
            **command.model_dump(exclude={"completed_at"}),
        )
        plan.complete(
            session, completion, timezone=site.timezone, earliest=earliest, upcoming=upcoming
        )
        action = AuditAction.SESSION_COMPLETED
        plan.attach(ctx.audit(actor, action, "session", str(session_id), site.site_id))
    await ctx.rooms.confirm(upcoming.reservation if upcoming else None)
    await ctx.rooms.release(
        site.site_id, site.timezone, session_id, session.starts_at, from_=completed_at
    )
    ctx.desk.forget(site.site_id)
    COMPLETIONS.inc()
    return plan


async def reschedule_session(
    ctx: SchedulerContext, session_id: uuid.UUID, command: RescheduleSession
) -> Plan:
    """Move a booked session, keeping the spacing, the opening hours and one client per room."""
    async with _changing(ctx, session_id) as plan:
        site = await _site_of(ctx, plan)
        session = plan.scheduled(session_id)
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
                    ConflictReason.TOO_CLOSE_TO_PREVIOUS,
                    f"the previous session was on {anchor.date()}; this one may not be before "
                    f"{first_day}",
                )
        numbing = ctx.rules.numbing_minutes if plan.spec.numbing else 0
        starts_at = command.starts_at.astimezone(UTC)
        busy = await ctx.rooms.busy(
            site.site_id,
            site.timezone,
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
            raise Conflict(ConflictReason(checked), _PROBLEMS[checked])
        token = await ctx.rooms.reserve(
            site.site_id, site.timezone, checked, session.session_id, plan.plan_id
        )
        if token is None:
            raise Conflict(ConflictReason.NO_ROOM_FREE, _PROBLEMS[SlotProblem.ROOM_TAKEN])
        plan.move(session, session_from(checked, session.session_id, session.sequence, token))
    await ctx.rooms.confirm(token)
    # Only now that the plan records the new time is the old one given back.
    await ctx.rooms.release(site.site_id, site.timezone, session_id, session.starts_at,
                            keep=token)  # fmt: skip
    ctx.desk.forget(site.site_id)
    return plan


async def cancel_session(
    ctx: SchedulerContext, session_id: uuid.UUID, command: CancelSession
) -> Plan:
    async with _changing(ctx, session_id) as plan:
        session = plan.scheduled(session_id)
        plan.cancel(session, command.reason)
    await _free(ctx, plan, session)
    CANCELLATIONS.labels("requested").inc()
    return plan


async def _free(ctx: SchedulerContext, plan: Plan, session: Session) -> None:
    site = await _site_of(ctx, plan)
    await ctx.rooms.release(site.site_id, site.timezone, session.session_id, session.starts_at)
    ctx.desk.forget(site.site_id)


async def on_client_erased(ctx: SchedulerContext, client_id: str) -> None:
    """A contact tombstone: cancel the client's future sessions, free their rooms, drop notes.

    The client is remembered as erased first, so a passed screening of theirs that is still in
    flight books nothing afterwards (SPEC section 6).
    """
    await ctx.erased.update_one(
        {"_id": client_id}, {"$setOnInsert": {"erased_at": ctx.clock()}}, upsert=True
    )
    for found in await ctx.plans.for_client(client_id):
        async with ctx.uow.change(ctx.plans, str(found.plan_id)) as plan:
            if plan is None:
                continue  # finished: nothing booked is left to cancel
            cancelled = plan.erase()
        for session in cancelled:
            await _free(ctx, plan, session)
        CANCELLATIONS.labels("client_erased").inc(len(cancelled))


async def is_erased(ctx: SchedulerContext, client_id: str, since: datetime) -> bool:
    """Whether the client was erased after `since` (a later screening un-erases them)."""
    marker = await ctx.erased.find_one({"_id": client_id})
    return marker is not None and marker["erased_at"] >= since


async def reap_reservations(ctx: SchedulerContext) -> int:
    """Give back room time that a scheduler reserved and then died before recording."""
    now = ctx.clock()
    await ctx.rooms.forget_before((now - timedelta(days=2)).date())

    def plan_held(plan_id: str) -> contextlib.AbstractAsyncContextManager[object]:
        return ctx.uow.locks.hold(lease_name(ctx.plans.collection, plan_id), wait=5)

    reaped = await ctx.rooms.reap(
        ctx.plans.records_reservation, plan_held, older_than=now - RESERVATION_GRACE
    )
    if reaped:
        ctx.desk.forget()
    return reaped


@contextlib.asynccontextmanager
async def _site_change(
    ctx: SchedulerContext, site: SiteUpdated
) -> AsyncIterator[tuple[Site, bool]]:
    """The stored site (or a new one made of `site`) held for a change, and whether it is new."""
    fresh = Site(site_id=site.site_id, site=site)
    async with ctx.uow.change(ctx.sites, site.site_id, create=lambda: fresh) as stored:
        assert stored is not None
        yield stored, stored is fresh
    ctx.sites.forget(site.site_id)


async def put_site(ctx: SchedulerContext, site: SiteUpdated, actor: Principal) -> bool:
    """Store a site and publish it, with its audit entry; True when it is new."""
    async with _site_change(ctx, site) as (stored, created):
        stored.update(site)
        action = AuditAction.SITE_CHANGED
        stored.attach(ctx.audit(actor, action, "site", site.site_id, site.site_id))
    return created


async def seed_site(ctx: SchedulerContext, site: SiteUpdated) -> bool:
    """Create a site of the sites file unless one of that id exists; True when created."""
    async with _site_change(ctx, site) as (stored, created):
        if created:
            stored.update(site)
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
    site = await ctx.sites.site(site_id)
    if site is None:
        raise NotFound(f"no site {site_id}")
    return site


async def stalled_plans(ctx: SchedulerContext) -> list[StalledPlan]:
    """Every stalled plan (`services.scheduler.domain.stalls`), ids and dates only. Reads the
    live plans, which hold only plans that can still change: finished ones are in history."""
    zones: dict[str, str | None] = {}
    found = []
    async for document in ctx.plans.collection.find({}):
        plan = ctx.plans.load(document)
        if plan.site_id not in zones:
            site = await ctx.sites.site(plan.site_id)
            zones[plan.site_id] = None if site is None else site.timezone
        zone = zones[plan.site_id]
        why = (
            None
            if zone is None
            else stall(
                plan, zone, horizon=ctx.horizon, min_interval_days=ctx.rules.min_interval_days
            )
        )
        if why is not None:
            found.append(
                StalledPlan(
                    plan_id=plan.plan_id,
                    client_id=plan.client_id,
                    site_id=plan.site_id,
                    next_sequence=why.next_sequence,
                    total_sessions=plan.spec.total_sessions,
                    window_opens=why.window_opens,
                    window_closes=why.window_closes,
                    booked_at=why.booked_at,
                    reason=why.reason,
                )
            )
    return sorted(found, key=lambda p: (p.window_opens, str(p.plan_id)))


_PROBLEMS = {
    SlotProblem.CLOSED: "the site is closed then (numbing time included)",
    SlotProblem.ROOM_TAKEN: "every room is taken then (numbing time included)",
    SlotProblem.TOO_SOON: "that time is already past",
    SlotProblem.MISALIGNED: "sessions start on a quarter hour",
}
