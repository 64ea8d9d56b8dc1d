"""A site's rooms on one local day: who holds which room when (numbing included).

One document per site and day, changed under its lease like every aggregate, so finding a
slot reads a handful of days by id whatever the number of bookings ever made, and two bookers
can never both take the same room time: the second re-reads the day and sees the first.
"""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from services.scheduler.domain.slots import Busy, Slot
from shared.aggregate import Aggregate


def day_id(site_id: str, day: date) -> str:
    return f"{site_id}|{day.isoformat()}"


class Block(BaseModel):
    """Room time one session holds: from numbing start to session end."""

    model_config = ConfigDict(frozen=True)

    room: int
    starts_at: datetime
    ends_at: datetime
    session_id: UUID
    token: str


class RoomDay(Aggregate):
    day_id: str
    site_id: str
    day: date
    blocks: list[Block] = Field(default_factory=list)

    def busy(self, *, ignore: UUID | None = None) -> list[Busy]:
        return [
            Busy(room=b.room, starts_at=b.starts_at, ends_at=b.ends_at)
            for b in self.blocks
            if b.session_id != ignore
        ]

    def take(self, slot: Slot, session_id: UUID, token: str) -> bool:
        """Hold the slot's room for the session, or False when another session holds any of
        it. A session being moved keeps its old time too, until its plan records the new one
        and gives the old back (`give_back(keep=...)`): a crash in between must not leave the
        old booking unprotected."""
        start, end = slot.occupied_from, slot.ends_at
        for block in self.blocks:
            overlaps = block.room == slot.room and block.starts_at < end and start < block.ends_at
            if overlaps and block.session_id != session_id:
                return False
        self.blocks.append(Block(room=slot.room, starts_at=start, ends_at=end,
                                 session_id=session_id, token=token))  # fmt: skip
        return True

    def give_back(
        self,
        session_id: UUID,
        *,
        token: str | None = None,
        keep: str | None = None,
        from_: datetime | None = None,
    ) -> None:
        """Free the session's time (only `token`'s, all but `keep`'s, or only what lies after
        `from_`)."""
        kept = []
        for block in self.blocks:
            mine = block.session_id == session_id
            if not mine or (token is not None and block.token != token) or block.token == keep:
                kept.append(block)
            elif from_ is not None and block.starts_at < from_:
                kept.append(block.model_copy(update={"ends_at": max(from_, block.starts_at)}))
        self.blocks = [b for b in kept if b.ends_at > b.starts_at]

    def holds(self, token: str) -> bool:
        return any(b.token == token for b in self.blocks)
