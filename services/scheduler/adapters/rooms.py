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
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pymongo.asynchronous.database import AsyncDatabase

from services.scheduler.domain.rooms import RoomDay, day_id
from services.scheduler.domain.slots import Busy, Slot
from shared.batching import DeleteBatcher, InsertBatcher
from shared.locks import LockTimeout
from shared.uow import AggregateStore, UnitOfWork

ROOM_DAYS = "room_days"
RESERVATIONS = "reservations"


def local_days(start: datetime, end: datetime, timezone: str) -> list[date]:
    zone = ZoneInfo(timezone)
    first, last = start.astimezone(zone).date(), end.astimezone(zone).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


@dataclass(frozen=True)
class Hold:
    """Room time a session asks for: the slot, whose session it is, and the plan recording it."""

    slot: Slot
    session_id: uuid.UUID
    plan_id: uuid.UUID


class Rooms:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], uow: UnitOfWork) -> None:
        self.days = AggregateStore(db[ROOM_DAYS], RoomDay, "day_id")
        self.reservations = db[RESERVATIONS]
        self.notes = InsertBatcher(self.reservations)
        self.done = DeleteBatcher(self.reservations)
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

    async def busy_on(self, site_id: str, days: list[date]) -> dict[date, list[Busy]]:
        """The room time taken on each of `days` (read by id, all at once)."""
        found = await asyncio.gather(*(self.days.get(day_id(site_id, d)) for d in days))
        return {d: [] if day is None else day.busy() for d, day in zip(days, found, strict=True)}

    async def reserve(
        self, site_id: str, timezone: str, slot: Slot, session_id: uuid.UUID, plan_id: uuid.UUID
    ) -> str | None:
        """Hold the slot's room for the session; its token, or None when it was taken."""
        return (await self.reserve_many(site_id, timezone, [Hold(slot, session_id, plan_id)]))[0]

    async def reserve_many(
        self, site_id: str, timezone: str, holds: list[Hold]
    ) -> list[str | None]:
        """Hold each slot's room for its session, with one change per day for all of them;
        per hold its token, or None when that time was taken meanwhile."""
        zone = ZoneInfo(timezone)
        now = datetime.now(UTC)
        tokens = [uuid.uuid4().hex for _ in holds]
        keys = [day_id(site_id, h.slot.occupied_from.astimezone(zone).date()) for h in holds]
        await self.notes.insert_all(
            [
                {"_id": token, "day_id": key, "session_id": str(hold.session_id),
                 "plan_id": str(hold.plan_id), "created_at": now}
                for token, key, hold in zip(tokens, keys, holds, strict=True)
            ]
        )  # fmt: skip
        by_day: dict[str, list[int]] = {}
        for index, key in enumerate(keys):
            by_day.setdefault(key, []).append(index)
        taken: set[int] = set()

        async def change(key: str, indexes: list[int]) -> None:
            first = holds[indexes[0]].slot.occupied_from.astimezone(zone).date()
            new = RoomDay(day_id=key, site_id=site_id, day=first)
            async with self.uow.change(self.days, key, create=lambda: new) as room_day:
                assert room_day is not None
                for i in indexes:
                    if room_day.take(holds[i].slot, holds[i].session_id, tokens[i]):
                        taken.add(i)

        changes = [change(key, indexes) for key, indexes in by_day.items()]
        failed = [e for e in await asyncio.gather(*changes, return_exceptions=True) if e]
        await self.confirm(*(token for i, token in enumerate(tokens) if i not in taken))
        if failed:  # every day was tried; time taken on the others is reaped if not recorded
            raise failed[0]
        return [token if i in taken else None for i, token in enumerate(tokens)]

    async def confirm(self, *tokens: str | None) -> None:
        """The plan holding these reservations is committed: nothing is left to reap."""
        await self.done.delete(*(token for token in tokens if token is not None))

    async def release(
        self,
        site_id: str,
        timezone: str,
        session_id: uuid.UUID,
        around: datetime,
        *,
        token: str | None = None,
        keep: str | None = None,
        from_: datetime | None = None,
    ) -> None:
        """Give back the session's time on the day(s) around `around` (its start): all of it,
        only `token`'s, all but `keep`'s, or what lies after `from_`."""
        for day in local_days(around - timedelta(hours=3), around + timedelta(hours=3), timezone):
            async with self.uow.change(self.days, day_id(site_id, day)) as room_day:
                if room_day is not None:
                    room_day.give_back(session_id, token=token, keep=keep, from_=from_)

    async def reap(
        self,
        recorded: Callable[[str, str], Awaitable[bool]],
        plan_held: Callable[[str], AbstractAsyncContextManager[object]],
        *,
        older_than: datetime,
    ) -> int:
        """Give back reservations older than `older_than` that no plan records; how many.

        Each is decided under its plan's lease (`plan_held`), so a plan being saved with the
        reservation right now is waited for, not robbed of its room time. A plan busy for
        longer is looked at again next round."""
        reaped = 0
        notes = self.reservations.find({"created_at": {"$lt": older_than}})
        for note in await notes.to_list():
            try:
                async with plan_held(note["plan_id"]):
                    if not await recorded(note["plan_id"], note["_id"]):
                        async with self.uow.change(self.days, note["day_id"]) as room_day:
                            if room_day is not None:
                                session = uuid.UUID(note["session_id"])
                                room_day.give_back(session, token=note["_id"])
                        reaped += 1
            except LockTimeout:
                continue
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
