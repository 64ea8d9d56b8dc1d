"""Room time in MongoDB: one `RoomDay` per site and local day, read by id.

A reservation is taken under the day's lease and noted in `reservations` until the plan that
asked for it is committed. A scheduler that dies in between leaves the note, and the reaper,
which reads only those notes (a handful, never the bookings), gives the time back. Past days
are dropped by the same loop, so the collection holds the booking horizon and no history.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pymongo.asynchronous.database import AsyncDatabase

from services.scheduler.domain.rooms import RoomDay, day_id
from services.scheduler.domain.slots import Busy, Slot
from shared.batching import InsertBatcher
from shared.uow import AggregateStore, UnitOfWork

ROOM_DAYS = "room_days"
RESERVATIONS = "reservations"


def local_days(start: datetime, end: datetime, timezone: str) -> list[date]:
    zone = ZoneInfo(timezone)
    first, last = start.astimezone(zone).date(), end.astimezone(zone).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


class Rooms:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], uow: UnitOfWork) -> None:
        self.days = AggregateStore(db[ROOM_DAYS], RoomDay, "day_id")
        self.reservations = db[RESERVATIONS]
        self.notes = InsertBatcher(self.reservations)
        self.uow = uow

    async def busy(
        self,
        site_id: str,
        timezone: str,
        start: datetime,
        end: datetime,
        *,
        ignore: uuid.UUID | None = None,
    ) -> list[Busy]:
        """The room time taken on the local days of [start, end] (one read per day, at once)."""
        days = local_days(start, end, timezone)
        found = await asyncio.gather(*(self.days.get(day_id(site_id, d)) for d in days))
        return [busy for day in found if day is not None for busy in day.busy(ignore=ignore)]

    async def reserve(
        self, site_id: str, timezone: str, slot: Slot, session_id: uuid.UUID, plan_id: uuid.UUID
    ) -> str | None:
        """Hold the slot's room for the session; its token, or None when it was taken."""
        token = uuid.uuid4().hex
        day = slot.occupied_from.astimezone(ZoneInfo(timezone)).date()
        key = day_id(site_id, day)
        await self.notes.insert(
            {"_id": token, "day_id": key, "session_id": str(session_id),
             "plan_id": str(plan_id), "created_at": datetime.now(UTC)}
        )  # fmt: skip
        taken = False
        new = RoomDay(day_id=key, site_id=site_id, day=day)
        async with self.uow.change(self.days, key, create=lambda: new) as room_day:
            assert room_day is not None
            taken = room_day.take(slot, session_id, token)
        if not taken:
            await self.confirm(token)
        return token if taken else None

    async def confirm(self, *tokens: str | None) -> None:
        """The plan holding these reservations is committed: nothing is left to reap."""
        for token in tokens:
            if token is not None:
                await self.reservations.delete_one({"_id": token})

    async def release(
        self,
        site_id: str,
        timezone: str,
        session_id: uuid.UUID,
        around: datetime,
        *,
        token: str | None = None,
        from_: datetime | None = None,
    ) -> None:
        """Give back the session's time on the day(s) around `around` (its start)."""
        for day in local_days(around - timedelta(hours=3), around + timedelta(hours=3), timezone):
            async with self.uow.change(self.days, day_id(site_id, day)) as room_day:
                if room_day is not None:
                    room_day.give_back(session_id, token=token, from_=from_)

    async def reap(
        self, recorded: Callable[[str, str], Awaitable[bool]], *, older_than: datetime
    ) -> int:
        """Give back reservations older than `older_than` that no plan records; how many."""
        reaped = 0
        notes = self.reservations.find({"created_at": {"$lt": older_than}})
        for note in await notes.to_list():
            if not await recorded(note["plan_id"], note["_id"]):
                async with self.uow.change(self.days, note["day_id"]) as room_day:
                    if room_day is not None:
                        room_day.give_back(uuid.UUID(note["session_id"]), token=note["_id"])
                reaped += 1
            await self.confirm(note["_id"])
        return reaped

    async def forget_before(self, day: date) -> int:
        """Drop the days before `day`: past room time is nobody's to book."""
        result = await self.days.collection.delete_many({"day": {"$lt": day.isoformat()}})
        return result.deleted_count

    async def held_by(self, session_id: uuid.UUID) -> list[dict[str, Any]]:
        """The blocks a session holds, wherever they are (for tests and support; scans)."""
        query = {"blocks.session_id": str(session_id)}
        return [
            block
            async for day in self.days.collection.find(query)
            for block in day["blocks"]
            if block["session_id"] == str(session_id)
        ]
