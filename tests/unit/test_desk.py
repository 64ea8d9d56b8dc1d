"""The booking desk: bookings that arrive together are placed in one round, in order, without
overlap; time another scheduler took meanwhile is searched again on fresh reads.

The rooms adapter is replaced by an in-memory one (its MongoDB side is tested in
tests/integration/test_scheduler.py); what is checked here is the desk's own coordination.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import pytest

from services.scheduler.adapters.rooms import Hold, Rooms
from services.scheduler.desk import BookingDesk, RoomTimeContended
from services.scheduler.domain.model import Session
from services.scheduler.domain.slots import Busy
from shared.events import SiteUpdated

SITE = SiteUpdated(
    site_id="tiny-01",
    name="Tiny",
    timezone="Europe/Paris",
    opening_hours={day: ["09:00", "17:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
    rooms=1,
)
MONDAY = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


class MemoryRooms:
    """Room time in a list; `refuse` holds that another scheduler took first (once each)."""

    def __init__(self) -> None:
        self.held: list[Busy] = []
        self.rounds: list[int] = []
        self.refuse: set[datetime] = set()
        self.reads = 0

    async def busy_on(self, site_id: str, days: list[date]) -> dict[date, list[Busy]]:
        self.reads += 1
        await asyncio.sleep(0)
        return {d: [b for b in self.held if b.starts_at.date() == d] for d in days}

    async def reserve_many(
        self, site_id: str, timezone: str, holds: list[Hold]
    ) -> list[str | None]:
        self.rounds.append(len(holds))
        await asyncio.sleep(0)
        tokens: list[str | None] = []
        for hold in holds:
            slot = hold.slot
            if slot.starts_at in self.refuse:
                self.refuse.discard(slot.starts_at)
                self.held.append(Busy(slot.room, slot.occupied_from, slot.ends_at))
                tokens.append(None)
                continue
            self.held.append(Busy(slot.room, slot.occupied_from, slot.ends_at))
            tokens.append(uuid.uuid4().hex)
        return tokens


def desk_over(rooms: MemoryRooms) -> BookingDesk:
    return BookingDesk(cast(Rooms, rooms), session_minutes=60, horizon=timedelta(days=30))


async def book(desk: BookingDesk) -> Session | None:
    plan_id = uuid.uuid4()
    return await desk.book(SITE, plan_id, uuid.uuid4(), 1, 0, MONDAY)


def assert_apart(sessions: list[Any]) -> None:
    ordered = sorted((s.starts_at, s.ends_at) for s in sessions)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ordered))


async def test_bookings_arriving_together_share_rounds_and_never_overlap() -> None:
    rooms = MemoryRooms()
    desk = desk_over(rooms)
    sessions = await asyncio.gather(*(book(desk) for _ in range(20)))
    assert all(s is not None for s in sessions)
    assert_apart(sessions)
    assert sum(rooms.rounds) == 20
    assert len(rooms.rounds) <= 2, "bookings that arrived together took rounds of their own"


async def test_the_earliest_free_slots_are_used_in_order_of_arrival() -> None:
    rooms = MemoryRooms()
    desk = desk_over(rooms)
    first = await book(desk)
    second = await book(desk)
    assert first is not None
    assert second is not None
    assert first.starts_at.astimezone(UTC) == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert second.starts_at == first.ends_at


async def test_time_taken_by_another_scheduler_is_searched_again() -> None:
    rooms = MemoryRooms()
    rooms.refuse.add(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    desk = desk_over(rooms)
    session = await book(desk)
    assert session is not None
    assert session.starts_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert rooms.rounds == [1, 1]


async def test_endless_contention_fails_the_booking_so_the_event_is_retried() -> None:
    class AlwaysTaken(MemoryRooms):
        async def reserve_many(
            self, site_id: str, timezone: str, holds: list[Hold]
        ) -> list[str | None]:
            self.rounds.append(len(holds))
            return [None] * len(holds)

    rooms = AlwaysTaken()
    with pytest.raises(RoomTimeContended):
        await book(desk_over(rooms))
