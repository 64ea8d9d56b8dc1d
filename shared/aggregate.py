"""The base of every aggregate: its methods change its state and record the events they cause.

Pure (no I/O): an aggregate only remembers what it recorded; the unit of work (`shared.uow`)
turns the recordings into envelopes and writes them with the new state in one update.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pydantic import BaseModel, PrivateAttr

from shared.envelope import Record
from shared.events import EventData


@dataclass(frozen=True)
class Recorded:
    """A domain event as the aggregate recorded it, with the ids that place it in a workflow."""

    data: EventData
    event_id: uuid.UUID
    correlation_id: uuid.UUID | None
    causation_id: uuid.UUID | None


class Aggregate(BaseModel):
    """Subclasses record events from their own methods; the unit of work collects them."""

    _recorded: list[Recorded | Record] = PrivateAttr(default_factory=list)

    def record(
        self, data: EventData, *, correlation: uuid.UUID | None, cause: uuid.UUID | None
    ) -> uuid.UUID:
        """Record `data` as caused by `cause`; the new event's id (the cause of the next one)."""
        event_id = uuid.uuid4()
        self._recorded.append(Recorded(data, event_id, correlation, cause))
        return event_id

    def attach(self, record: Record) -> None:
        """Send a ready-made record with this change (an audit entry, a tombstone)."""
        self._recorded.append(record)

    @property
    def finished(self) -> bool:
        """Whether the aggregate can change no more: its store may then move it to history."""
        return False

    def collect(self) -> list[Recorded | Record]:
        """What was recorded since the last call, in order; the list is emptied."""
        recorded, self._recorded = self._recorded, []
        return recorded
