"""Room reservations that two schedulers can never double-book.

Each occupied quarter hour of a room is one document whose `_id` is (site, room, quarter): the
unique `_id` index makes MongoDB itself refuse a second client in the same room at the same
time, across processes and replicas, with no lock. A reservation inserts all its quarters and
takes them back if any one is already taken. The plan records the token of the reservation
its session holds; a reservation no plan records (its booker died before saving the plan) is
reaped after a grace period.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from services.scheduler.domain.slots import Busy, Slot

QUARTER = timedelta(minutes=15)
ROOM_BLOCKS = "room_blocks"


def quarters(start: datetime, end: datetime) -> list[datetime]:
    start = start.astimezone(UTC)
    epoch = int(start.timestamp())
    first = datetime.fromtimestamp(epoch - epoch % 900, UTC)
    out = []
    while first < end:
        out.append(first)
        first += QUARTER
    return out


class RoomBlocks:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.blocks = db[ROOM_BLOCKS]

    async def ensure_indexes(self) -> None:
        await self.blocks.create_index([("site_id", ASCENDING), ("start", ASCENDING)])
        await self.blocks.create_index([("session_id", ASCENDING)])
        await self.blocks.create_index([("created_at", ASCENDING)])

    async def busy(
        self, site_id: str, start: datetime, end: datetime, *, ignore: uuid.UUID | None = None
    ) -> list[Busy]:
        """The room time taken in [start, end), optionally without one session's own blocks."""
        query: dict[str, Any] = {"site_id": site_id, "start": {"$gte": start, "$lt": end}}
        return [
            Busy(room=doc["room"], starts_at=doc["start"], ends_at=doc["start"] + QUARTER)
            async for doc in self.blocks.find(query)
            if ignore is None or doc["session_id"] != str(ignore)
        ]

    async def reserve(self, site_id: str, slot: Slot, session_id: uuid.UUID) -> str | None:
        """Take the slot's room from numbing start to session end; the token, or None if taken.

        Quarters this session already holds (a reschedule that overlaps its old time) are kept
        and passed to the new token; the session's other quarters are given back on success.
        """
        token = uuid.uuid4().hex
        now = datetime.now(UTC)
        wanted = {
            f"{site_id}|{slot.room}|{int(start.timestamp())}": {
                "site_id": site_id,
                "room": slot.room,
                "start": start,
                "session_id": str(session_id),
                "token": token,
                "created_at": now,
            }
            for start in quarters(slot.occupied_from, slot.ends_at)
        }
        held = {doc["_id"] async for doc in self.blocks.find({"session_id": str(session_id)})}
        fresh = [{"_id": key, **doc} for key, doc in wanted.items() if key not in held]
        try:
            if fresh:
                await self.blocks.insert_many(fresh, ordered=True)
        except BulkWriteError:
            await self.blocks.delete_many({"token": token})
            return None
        kept = [key for key in wanted if key in held]
        if kept:
            await self.blocks.update_many({"_id": {"$in": kept}}, {"$set": {"token": token}})
        await self.blocks.delete_many({"session_id": str(session_id), "token": {"$ne": token}})
        return token

    async def reap(
        self, recorded: Callable[[str], Awaitable[bool]], *, older_than: datetime
    ) -> int:
        """Give back reservations older than `older_than` that no plan records; how many."""
        tokens = await self.blocks.distinct("token", {"created_at": {"$lt": older_than}})
        reaped = 0
        for token in tokens:
            if not await recorded(token):
                await self.blocks.delete_many({"token": token})
                reaped += 1
        return reaped

    async def release_token(self, token: str) -> None:
        await self.blocks.delete_many({"token": token})

    async def release(self, session_id: uuid.UUID, *, from_: datetime | None = None) -> None:
        """Give back a session's room time (from `from_` on, when it ended early)."""
        query: dict[str, Any] = {"session_id": str(session_id)}
        if from_ is not None:
            query["start"] = {"$gte": from_}
        await self.blocks.delete_many(query)
