"""Room reservations that two schedulers can never double-book.

Each occupied quarter hour of a room is one document whose `_id` is (site, room, quarter): the
unique `_id` index makes MongoDB itself refuse a second client in the same room at the same
time, across processes and replicas, with no lock. A reservation inserts all its quarters and
takes them back if any one is already taken.
"""

from __future__ import annotations

import uuid
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
        """Take the slot's room from numbing start to session end; the token, or None if taken."""
        token = uuid.uuid4().hex
        documents = [
            {
                "_id": f"{site_id}|{slot.room}|{int(start.timestamp())}",
                "site_id": site_id,
                "room": slot.room,
                "start": start,
                "session_id": str(session_id),
                "token": token,
            }
            for start in quarters(slot.occupied_from, slot.ends_at)
        ]
        try:
            await self.blocks.insert_many(documents, ordered=True)
        except BulkWriteError:
            await self.blocks.delete_many({"token": token})
            return None
        return token

    async def release_token(self, token: str) -> None:
        await self.blocks.delete_many({"token": token})

    async def release(self, session_id: uuid.UUID, *, from_: datetime | None = None) -> None:
        """Give back a session's room time (from `from_` on, when it ended early)."""
        query: dict[str, Any] = {"session_id": str(session_id)}
        if from_ is not None:
            query["start"] = {"$gte": from_}
        await self.blocks.delete_many(query)
