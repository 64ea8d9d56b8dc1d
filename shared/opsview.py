"""What the live ops page shows (issue 14), as pure functions over what Kafka holds: per site,
how many clients are at each stage of their workflow; consumer lag; DLQ depth; the newest dead
letters' errors.

The stages are counted from the workflow events themselves, not by querying the services'
collections: on FerretDB v1 any filter but `_id` scans a whole collection, and a page that
refreshes every second would scan the growing ones every second. Each client counts once, at
the stage its latest screening or session event puts it in; the counts per site are kept as
events arrive, so a snapshot costs the number of sites, not of clients.

Only ids, stages, counts and error texts are kept: the reader never sees the contact topic,
and reason codes, free-text reasons and aftercare texts are dropped on arrival. Error texts
are what the services put in `dlq-error`, which names fields, never values (`shared.envelope`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from shared.envelope import Event
from shared.events import (
    EventData,
    EventKind,
    ScreeningFailed,
    ScreeningPassed,
    SessionCancelled,
    SessionCompleted,
    SessionScheduled,
    SiteUpdated,
)
from shared.lag import PartitionLag

ERRORS_KEPT = 20
ERROR_CHARS = 300


class Stage(StrEnum):
    """Where a client's workflow stands, after its latest screening or session event."""

    SCREENED_OUT = "screened_out"
    """The latest screening was deferred or declined."""
    AWAITING_BOOKING = "awaiting_booking"
    """Passed, or a session of the plan done, and the next session not booked yet."""
    BOOKED = "booked"
    CANCELLED = "cancelled"
    """The booked session was cancelled (on request, or the client was erased)."""
    TREATED = "treated"
    """The plan's last session is done: only aftercare follows."""


WORKFLOW_KINDS = (
    EventKind.SCREENING_PASSED,
    EventKind.SCREENING_FAILED,
    EventKind.SESSION_SCHEDULED,
    EventKind.SESSION_CANCELLED,
    EventKind.SESSION_COMPLETED,
)
"""The topics whose events move a client between stages (the page also reads site_updated)."""

_RANK = {
    EventKind.SCREENING_PASSED: 0,
    EventKind.SCREENING_FAILED: 0,
    EventKind.SESSION_COMPLETED: 1,
    EventKind.SESSION_CANCELLED: 2,
    EventKind.SESSION_SCHEDULED: 3,
}
"""Which of two events with the same time came later: a completion and the booking of the
next session are written together, and the booking follows."""


def stage_of(data: EventData) -> Stage | None:
    """The stage an event puts its client in; None for events that move no client."""
    match data:
        case ScreeningFailed():
            return Stage.SCREENED_OUT
        case ScreeningPassed():
            return Stage.AWAITING_BOOKING
        case SessionScheduled():
            return Stage.BOOKED
        case SessionCancelled():
            return Stage.CANCELLED
        case SessionCompleted():
            last = data.sequence >= data.total_sessions
            return Stage.TREATED if last else Stage.AWAITING_BOOKING
    return None


@dataclass(frozen=True)
class _Client:
    site_id: str
    stage: Stage
    at: tuple[datetime, int]


class SiteCounts(BaseModel):
    site_id: str
    name: str | None = Field(description="None while the site's own record is not read yet.")
    stages: dict[Stage, int] = Field(description="Clients at each stage; every stage is listed.")


class GroupLag(BaseModel):
    group: str
    topic: str
    lag: int = Field(description="Records the group has yet to read, over the topic's partitions.")


class DeadLetterError(BaseModel):
    """Why one record went to a DLQ: the `dlq-*` headers, never the record itself."""

    failed_at: datetime
    topic: str = Field(description="The topic the record came from.")
    where: str = Field(description="topic:partition:offset of the original record.")
    group: str | None
    error_type: str | None
    error: str


class OpsSnapshot(BaseModel):
    """One `snapshot` event of `GET /v1/ops/stream`."""

    caught_up: bool = Field(description="Whether the workflow topics are read to their end.")
    sites: list[SiteCounts]
    lag: list[GroupLag]
    dead_letters: dict[str, int] = Field(description="Records in each DLQ topic.")
    errors: list[DeadLetterError] = Field(description="The newest dead letters, newest first.")


def lag_by_topic(lags: Iterable[PartitionLag]) -> list[GroupLag]:
    """Partition lags summed per group and topic: a page shows totals, the CLI partitions."""
    totals: dict[tuple[str, str], int] = {}
    for lag in lags:
        totals[(lag.group, lag.topic)] = totals.get((lag.group, lag.topic), 0) + lag.lag
    return [GroupLag(group=g, topic=t, lag=n) for (g, t), n in sorted(totals.items())]


def dead_letter_error(headers: Sequence[tuple[str, bytes]]) -> DeadLetterError | None:
    """The error a dead letter's headers describe; None when they are not `DeadLetters`'."""
    found = {name: value.decode(errors="replace") for name, value in headers}
    try:
        failed_at = datetime.fromisoformat(found["dlq-failed-at"])
        topic = found["dlq-original-topic"]
        error = found["dlq-error"]
    except (KeyError, ValueError):
        return None
    if failed_at.tzinfo is None:
        return None
    where = ":".join(
        (topic, found.get("dlq-original-partition", "?"), found.get("dlq-original-offset", "?"))
    )
    return DeadLetterError(
        failed_at=failed_at,
        topic=topic,
        where=where,
        group=found.get("dlq-consumer-group"),
        error_type=found.get("dlq-error-type"),
        error=error[:ERROR_CHARS],
    )


class OpsBoard:
    """Everything the page shows, kept up to date by `apply`, `note_error` and `set_lag`;
    each returns whether what a snapshot shows changed."""

    def __init__(self, errors_kept: int = ERRORS_KEPT) -> None:
        self._clients: dict[str, _Client] = {}
        self._counts: dict[str, dict[Stage, int]] = {}
        self._names: dict[str, str] = {}
        self._errors: list[DeadLetterError] = []
        self._errors_kept = errors_kept
        self._lag: list[GroupLag] = []
        self._depths: dict[str, int] = {}
        self.caught_up = False

    def apply(self, event: Event) -> bool:
        data = event.data
        if isinstance(data, SiteUpdated):
            changed = self._names.get(data.site_id) != data.name
            self._names[data.site_id] = data.name
            self._counts.setdefault(data.site_id, dict.fromkeys(Stage, 0))
            return changed
        stage = stage_of(data)
        if stage is None:
            return False
        client_id: str = data.client_id  # type: ignore[attr-defined]
        site_id: str = data.site_id  # type: ignore[attr-defined]
        at = (event.envelope.time, _RANK[event.kind])
        known = self._clients.get(client_id)
        if known is not None:
            if known.at >= at:
                return False  # a repeat, or an event older than the one that set the stage
            self._counts[known.site_id][known.stage] -= 1
        self._clients[client_id] = _Client(site_id, stage, at)
        self._counts.setdefault(site_id, dict.fromkeys(Stage, 0))[stage] += 1
        return known is None or (known.site_id, known.stage) != (site_id, stage)

    def note_error(self, error: DeadLetterError) -> bool:
        """Keep `error` if it is among the newest; the DLQs are read in no global order."""
        self._errors.append(error)
        self._errors.sort(key=lambda e: e.failed_at, reverse=True)
        dropped = self._errors[self._errors_kept :]
        del self._errors[self._errors_kept :]
        return error not in dropped

    def set_lag(self, lags: Iterable[PartitionLag], depths: dict[str, int]) -> bool:
        lag = lag_by_topic(lags)
        changed = (lag, depths) != (self._lag, self._depths)
        self._lag, self._depths = lag, dict(depths)
        return changed

    def snapshot(self, visible: Callable[[str], bool]) -> OpsSnapshot:
        """What a caller who sees the sites `visible` accepts may see; lag, DLQs and errors
        belong to no site and are shown to every ops caller."""
        sites = [
            SiteCounts(site_id=site_id, name=self._names.get(site_id), stages=dict(counts))
            for site_id, counts in sorted(self._counts.items())
            if visible(site_id)
        ]
        return OpsSnapshot(
            caught_up=self.caught_up,
            sites=sites,
            lag=list(self._lag),
            dead_letters=dict(sorted(self._depths.items())),
            errors=list(self._errors),
        )
