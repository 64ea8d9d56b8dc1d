"""The booking desk: a site's slot searches placed together, a round at a time.

Under load many passed screenings for one site arrive at once. Searched one by one, each would
read the same days and change the same `RoomDay`, one lease and one write per booking. The desk
serves a site in rounds instead. Searches that arrive while a round runs wait for the next one,
and that round:
- reads each day it needs once (by id),
- places every waiting session in arrival order, each one seeing the sessions placed before it,
- takes their room time with one change per day for all of them (`Rooms.reserve_many`).

A session whose time another scheduler took meanwhile goes back to the front of the queue and
is placed again on fresh reads. No room time is ever held twice, because the day's change under
its lease decides that, not the placement in memory.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from services.scheduler.adapters.rooms import Hold, Rooms, local_days
from services.scheduler.domain.model import Session
from services.scheduler.domain.slots import Busy, SiteHours, Slot, find_slot
from shared.events import SiteUpdated

SEARCH_WINDOW = timedelta(days=3)
"""Days read per step of a search: the earliest slot is nearly always in the first."""
TAKEN_SECONDS = 60.0
ROUND = 64
"""Most sessions placed in one round."""
RETRIES = 50


class RoomTimeContended(Exception):
    """Other schedulers kept taking the time this one found; the event is retried later."""


@dataclass(frozen=True)
class Taken:
    """Every slot from `origin` to `until` was found booked, a moment ago."""

    origin: datetime
    until: datetime
    seen: float = field(default_factory=time.monotonic)

    def covers(self, instant: datetime) -> bool:
        fresh = time.monotonic() - self.seen < TAKEN_SECONDS
        return fresh and self.origin <= instant < self.until


@dataclass
class Request:
    plan_id: uuid.UUID
    session_id: uuid.UUID
    sequence: int
    numbing: int
    not_before: datetime
    answer: asyncio.Future[Session | None]
    tries: int = 0


def hours_of(site: SiteUpdated) -> SiteHours:
    return SiteHours(timezone=site.timezone, opening_hours=site.opening_hours, rooms=site.rooms)


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


class BookingDesk:
    """Books sessions at each site of this process in rounds (see the module docstring)."""

    def __init__(self, rooms: Rooms, *, session_minutes: int, horizon: timedelta) -> None:
        self.rooms = rooms
        self.session_minutes = session_minutes
        self.horizon = horizon
        self.taken: dict[tuple[str, int], Taken] = {}
        """Per site and numbing time, a stretch found fully booked: the next search starts
        after it instead of reading those days again (forgotten on a release, or soon)."""
        self._waiting: dict[str, list[Request]] = {}
        self._sites: dict[str, SiteUpdated] = {}
        self._serving: dict[str, asyncio.Task[None]] = {}

    async def book(
        self, site: SiteUpdated, plan_id: uuid.UUID, session_id: uuid.UUID, sequence: int,
        numbing: int, not_before: datetime,
    ) -> Session | None:  # fmt: skip
        """The earliest free slot from `not_before` within the horizon, reserved; None when
        the site has none."""
        loop = asyncio.get_running_loop()
        request = Request(plan_id, session_id, sequence, numbing, not_before, loop.create_future())
        self._sites[site.site_id] = site
        self._waiting.setdefault(site.site_id, []).append(request)
        serving = self._serving.get(site.site_id)
        if serving is None or serving.done():
            self._serving[site.site_id] = loop.create_task(self._serve(site.site_id))
        return await request.answer

    def forget(self, site_id: str | None = None) -> None:
        """Room time was given back (at `site_id`, or anywhere): a booked stretch may have a gap."""
        for key in [key for key in self.taken if site_id is None or key[0] == site_id]:
            del self.taken[key]

    async def _serve(self, site_id: str) -> None:
        waiting = self._waiting.setdefault(site_id, [])
        while waiting:
            requests = waiting[:ROUND]
            del waiting[:ROUND]
            try:
                await self._round(self._sites[site_id], requests)
            except asyncio.CancelledError:
                for request in requests + waiting:
                    request.answer.cancel()
                raise
            except Exception as exc:
                for request in requests:
                    if not request.answer.done():
                        request.answer.set_exception(exc)

    async def _round(self, site: SiteUpdated, requests: list[Request]) -> None:
        read: dict[date, list[Busy]] = {}
        placed: list[Busy] = []

        async def busy(start: datetime, end: datetime) -> list[Busy]:
            days = local_days(start, end, site.timezone)
            if missing := [d for d in days if d not in read]:
                read.update(await self.rooms.busy_on(site.site_id, missing))
            return [b for d in days for b in read[d]] + placed

        hours = hours_of(site)
        holds: list[tuple[Request, Hold]] = []
        for request in requests:
            if request.answer.done():
                continue  # its booker gave up waiting
            slot = await self._place(site, hours, request, busy)
            if slot is None:
                request.answer.set_result(None)
                continue
            placed.append(Busy(slot.room, slot.occupied_from, slot.ends_at))
            holds.append((request, Hold(slot, request.session_id, request.plan_id)))
        if not holds:
            return
        tokens = await self.rooms.reserve_many(
            site.site_id, site.timezone, [hold for _, hold in holds]
        )
        again = []
        for (request, hold), token in zip(holds, tokens, strict=True):
            if request.answer.done():
                continue  # its booker gave up: the reaper gives the time back
            if token is not None:
                request.answer.set_result(
                    session_from(hold.slot, request.session_id, request.sequence, token)
                )
                continue
            request.tries += 1
            if request.tries >= RETRIES:
                request.answer.set_exception(RoomTimeContended(f"site {site.site_id}"))
            else:
                again.append(request)
        self._waiting.setdefault(site.site_id, [])[:0] = again

    async def _place(
        self,
        site: SiteUpdated,
        hours: SiteHours,
        request: Request,
        busy: Callable[[datetime, datetime], Awaitable[list[Busy]]],
    ) -> Slot | None:
        """The earliest slot for `request` given what is read and placed so far."""
        key = (site.site_id, request.numbing)
        hint = self.taken.get(key)
        fresh = hint is not None and hint.covers(request.not_before)
        start = hint.until if hint is not None and fresh else request.not_before
        deadline = request.not_before + self.horizon
        while start < deadline:
            slot = find_slot(
                hours,
                await busy(start, start + SEARCH_WINDOW + timedelta(days=1)),
                not_before=start,
                session_minutes=self.session_minutes,
                numbing_minutes=request.numbing,
                horizon_days=SEARCH_WINDOW.days,
            )
            if slot is not None:
                origin = hint.origin if hint is not None and fresh else request.not_before
                self.taken[key] = Taken(origin, slot.starts_at)
                return slot
            start += SEARCH_WINDOW
        return None
