"""Free slots: when a session can start, and in which room.

Opening hours are local wall-clock times, so each day's window is built in the site's timezone
(zoneinfo) and only then turned into UTC: a site opening at 09:00 opens at 09:00 local on both
sides of a daylight-saving change. A room holds one client at a time, numbing gel included, so
a booking occupies `[starts_at - numbing_minutes, starts_at + session_minutes)`. Intervals are
half-open: back-to-back bookings do not overlap. Pure: no I/O, no clock.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from operator import attrgetter
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from shared.errors import ConflictReason
from shared.vocabulary import ClockTime, IanaTimezone, Weekday

_WEEKDAYS = list(Weekday)  # date.weekday() order: mon = 0
_by_start = attrgetter("starts_at")
_QUARTER_HOUR = 15


@dataclass(frozen=True, slots=True)
class Busy:
    """An occupied interval of a room (numbing included); aware datetimes."""

    room: int
    starts_at: datetime
    ends_at: datetime

    def __post_init__(self) -> None:
        _require_aware(self.starts_at, "Busy.starts_at")
        _require_aware(self.ends_at, "Busy.ends_at")
        if self.ends_at <= self.starts_at:
            raise ValueError("Busy.ends_at must be after starts_at")


@dataclass(frozen=True, slots=True)
class Slot:
    """A bookable session, in UTC; the room is taken from `occupied_from`."""

    room: int
    starts_at: datetime
    ends_at: datetime
    numbing_starts_at: datetime | None

    @property
    def occupied_from(self) -> datetime:
        return self.numbing_starts_at or self.starts_at


class SlotProblem(StrEnum):
    """Why a requested start cannot be booked: each is the reason of the 409 it causes."""

    CLOSED = ConflictReason.OUTSIDE_OPENING_HOURS.value
    ROOM_TAKEN = ConflictReason.NO_ROOM_FREE.value
    TOO_SOON = ConflictReason.TOO_SOON.value
    MISALIGNED = ConflictReason.NOT_ON_THE_QUARTER_HOUR.value


class _Week:
    """Opening hours parsed once, as plain attributes: slot finding reads them for every day."""

    __slots__ = ("hours", "zone")

    def __init__(self, timezone: str, opening_hours: dict[Weekday, list[str]]) -> None:
        self.zone = ZoneInfo(timezone)
        self.hours: list[tuple[time, time | None] | None] = [None] * len(_WEEKDAYS)
        for day, (opens, closes) in opening_hours.items():
            # "24:00" closes at the next midnight: None stands for it.
            closing = None if closes == "24:00" else _clock(closes)
            self.hours[_WEEKDAYS.index(day)] = (_clock(opens), closing)

    def window(self, day: date) -> tuple[datetime, datetime] | None:
        hours = self.hours[day.weekday()]
        if hours is None:
            return None
        opens, closes = hours
        opening = datetime.combine(day, opens, tzinfo=self.zone)
        if closes is None:
            closing = datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.zone)
        else:
            closing = datetime.combine(day, closes, tzinfo=self.zone)
        return opening.astimezone(UTC), closing.astimezone(UTC)


class SiteHours(BaseModel):
    """What slot finding needs from a site: same shape as `SiteUpdated`, whose other fields
    (site_id, name) are ignored, so `SiteHours.model_validate(site.model_dump())` works."""

    model_config = ConfigDict(frozen=True)

    timezone: IanaTimezone
    opening_hours: dict[Weekday, Annotated[list[ClockTime], Field(min_length=2, max_length=2)]]
    rooms: int = Field(ge=1, le=100)

    _week: _Week = PrivateAttr()

    @model_validator(mode="after")
    def _opens_before_closing(self) -> SiteHours:
        for day, (opens, closes) in self.opening_hours.items():
            if opens >= closes:
                raise ValueError(f"opening_hours.{day}: {opens} is not before {closes}")
        return self

    def model_post_init(self, context: Any, /) -> None:
        self._week = _Week(self.timezone, self.opening_hours)

    @property
    def zone(self) -> ZoneInfo:
        return self._week.zone

    def window(self, day: date) -> tuple[datetime, datetime] | None:
        """The local `day`'s opening hours as UTC instants; None when the site is closed."""
        return self._week.window(day)


def find_slot(
    site: SiteHours,
    busy: Sequence[Busy],
    *,
    not_before: datetime,
    session_minutes: int = 60,
    numbing_minutes: int = 0,
    step_minutes: int = 30,
    horizon_days: int = 180,
) -> Slot | None:
    """The earliest slot starting at or after `not_before`, in the lowest free room.

    Candidates start at each local day's opening + numbing, then every `step_minutes`, over the
    `horizon_days` local days from `not_before`'s local date; None when none fits.
    """
    _require_aware(not_before, "not_before")
    if step_minutes < 1 or horizon_days < 0:
        raise ValueError("step_minutes must be >= 1 and horizon_days >= 0")
    before, session = _durations(session_minutes, numbing_minutes)
    step = timedelta(minutes=step_minutes)
    week = site._week
    resume = not_before.astimezone(UTC)  # no slot starts earlier; moves on as rooms fill up
    book = _RoomBook(busy, site.rooms, after=resume - before)
    day = resume.astimezone(week.zone).date()
    end = day + timedelta(days=horizon_days)
    while day < end:
        window = week.window(day)
        if window is not None:
            opens, closes = window
            grid = opens + before  # the first candidate; the others are whole steps after it
            latest = closes - session
            start = _on_grid(max(grid, resume), grid, step)
            while start <= latest:
                room, free_at = book.free_room(start - before, start + session)
                if room is not None:
                    return _slot(room, start, session, before)
                # Every room is taken until `free_at` at least: skip the candidates in between.
                resume = free_at + before
                start = _on_grid(max(resume, start + step), grid, step)
        day = max(day + timedelta(days=1), resume.astimezone(week.zone).date())
    return None


def check_slot(
    site: SiteHours,
    busy: Sequence[Busy],
    starts_at: datetime,
    *,
    not_before: datetime,
    session_minutes: int = 60,
    numbing_minutes: int = 0,
) -> Slot | SlotProblem:
    """Whether a requested start can be booked: the slot in the lowest free room, or why not."""
    _require_aware(starts_at, "starts_at")
    _require_aware(not_before, "not_before")
    before, session = _durations(session_minutes, numbing_minutes)
    local = starts_at.astimezone(site.zone)
    if local.minute % _QUARTER_HOUR or local.second or local.microsecond:
        return SlotProblem.MISALIGNED
    if starts_at < not_before:
        return SlotProblem.TOO_SOON
    start = starts_at.astimezone(UTC)
    occupied_from, ends = start - before, start + session
    window = site.window(local.date())
    if window is None or occupied_from < window[0] or ends > window[1]:
        return SlotProblem.CLOSED
    taken = {b.room for b in busy if b.starts_at < ends and occupied_from < b.ends_at}
    room = next((r for r in range(1, site.rooms + 1) if r not in taken), None)
    if room is None:
        return SlotProblem.ROOM_TAKEN
    return _slot(room, start, session, before)


class _RoomBook:
    """Each room's busy time as sorted, merged intervals, so asking whether a room is free is a
    binary search."""

    def __init__(self, busy: Sequence[Busy], rooms: int, *, after: datetime) -> None:
        self._rooms: list[tuple[list[datetime], list[datetime]]] = [([], []) for _ in range(rooms)]
        relevant = [b for b in busy if b.ends_at > after and 1 <= b.room <= rooms]
        relevant.sort(key=_by_start)
        for item in relevant:
            starts, ends = self._rooms[item.room - 1]
            if ends and item.starts_at <= ends[-1]:
                if item.ends_at > ends[-1]:
                    ends[-1] = item.ends_at
            else:
                starts.append(item.starts_at)
                ends.append(item.ends_at)

    def free_room(self, begins: datetime, finishes: datetime) -> tuple[int | None, datetime]:
        """The lowest room free over `[begins, finishes)`; else None and the earliest time one
        of the blocking intervals ends."""
        blocked_until = []
        for index, (starts, ends) in enumerate(self._rooms):
            i = bisect_right(ends, begins)  # the first interval ending after `begins`
            if i == len(ends) or starts[i] >= finishes:
                return index + 1, begins
            blocked_until.append(ends[i])
        return None, min(blocked_until)


def _durations(session_minutes: int, numbing_minutes: int) -> tuple[timedelta, timedelta]:
    if session_minutes < 1 or numbing_minutes < 0:
        raise ValueError("session_minutes must be >= 1 and numbing_minutes >= 0")
    return timedelta(minutes=numbing_minutes), timedelta(minutes=session_minutes)


def _on_grid(moment: datetime, grid: datetime, step: timedelta) -> datetime:
    """The first candidate `grid + k * step` at or after `moment`."""
    steps, rest = divmod(moment - grid, step)
    return grid + (steps + (rest > timedelta(0))) * step


def _slot(room: int, start: datetime, session: timedelta, before: timedelta) -> Slot:
    return Slot(
        room=room,
        starts_at=start,
        ends_at=start + session,
        numbing_starts_at=start - before if before else None,
    )


def _clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
