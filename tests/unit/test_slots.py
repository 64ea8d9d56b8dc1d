"""Slot finding on the demo sites: opening hours in local time across DST, rooms, numbing."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.scheduler.domain.slots import (
    Busy,
    SiteHours,
    Slot,
    SlotProblem,
    check_slot,
    find_slot,
)
from shared.vocabulary import Weekday

WEEK = {day: ["09:00", "19:00"] for day in ("mon", "tue", "wed", "thu", "fri")}
PARIS = SiteHours.model_validate(
    {
        "site_id": "paris-01",  # a SiteUpdated's other fields are ignored
        "name": "Paris Opéra",
        "timezone": "Europe/Paris",
        "opening_hours": WEEK | {"sat": ["10:00", "17:00"]},
        "rooms": 3,
    }
)
NYC = SiteHours.model_validate(
    {
        "timezone": "America/New_York",
        "opening_hours": {day: ["08:00", "20:00"] for day in WEEK} | {"sat": ["09:00", "15:00"]},
        "rooms": 2,
    }
)
PARIS_ONE_ROOM = SiteHours.model_validate(PARIS.model_dump() | {"rooms": 1})
PARIS_TZ = ZoneInfo("Europe/Paris")
NYC_TZ = ZoneInfo("America/New_York")


def paris(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=PARIS_TZ)


def nyc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=NYC_TZ)


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def busy(room: int, starts: datetime, ends: datetime) -> Busy:
    return Busy(room=room, starts_at=starts.astimezone(UTC), ends_at=ends.astimezone(UTC))


def found(site: SiteHours, taken: list[Busy], not_before: datetime, **kwargs: int) -> Slot:
    slot = find_slot(site, taken, not_before=not_before, **kwargs)
    assert slot is not None
    assert slot.starts_at.tzinfo is UTC
    assert slot.ends_at - slot.starts_at == timedelta(minutes=kwargs.get("session_minutes", 60))
    return slot


# --- opening hours -------------------------------------------------------------------------------


def test_a_night_request_gets_the_next_opening() -> None:
    # Tuesday 3 March 2026, 22:00 local -> Wednesday at opening.
    slot = found(PARIS, [], paris(3, 3, 22))
    assert (slot.room, slot.starts_at, slot.numbing_starts_at) == (1, utc(3, 4, 8), None)
    assert slot.occupied_from == slot.starts_at
    assert found(NYC, [], nyc(3, 3, 22)).starts_at == utc(3, 4, 13)


def test_during_opening_hours_the_next_half_hour_is_offered() -> None:
    assert found(PARIS, [], paris(3, 4, 10, 10)).starts_at == paris(3, 4, 10, 30)
    assert found(PARIS, [], paris(3, 4, 10, 30)).starts_at == paris(3, 4, 10, 30)
    assert found(PARIS, [], paris(3, 4, 10, 10), step_minutes=15).starts_at == paris(3, 4, 10, 15)


def test_an_evening_in_new_york_is_already_the_next_day_in_utc() -> None:
    # Wednesday 19:00 in New York is Thursday 00:00 UTC: Wednesday's last slot is still free.
    assert found(NYC, [], nyc(3, 4, 19)).starts_at == utc(3, 5, 0)


def test_saturday_hours_are_used() -> None:
    assert found(PARIS, [], paris(3, 6, 20)).starts_at == paris(3, 7, 10)
    assert found(NYC, [], nyc(3, 6, 21)).starts_at == nyc(3, 7, 9)
    # The last Saturday session ends exactly at closing time; half an hour later, Monday.
    assert found(PARIS, [], paris(3, 7, 16)).starts_at == paris(3, 7, 16)
    assert found(PARIS, [], paris(3, 7, 16, 1)).starts_at == paris(3, 9, 9)


def test_sunday_is_skipped() -> None:
    assert found(PARIS, [], paris(3, 7, 18)).starts_at == paris(3, 9, 9)
    assert found(NYC, [], nyc(3, 14, 15)).starts_at == nyc(3, 16, 8)


def test_a_not_before_in_another_offset_uses_the_site_local_date() -> None:
    plus_five = timezone(timedelta(hours=5))
    # Saturday 01:00 at +05:00 is still Friday 15:00 in New York: Friday's hours apply.
    slot = found(NYC, [], datetime(2026, 3, 7, 1, 0, tzinfo=plus_five))
    assert slot.starts_at == utc(3, 6, 20) == nyc(3, 6, 15)
    # Wednesday 12:00 at +05:00 is 08:00 in Paris, before opening.
    assert found(PARIS, [], datetime(2026, 3, 4, 12, tzinfo=plus_five)).starts_at == utc(3, 4, 8)


def test_naive_datetimes_and_empty_intervals_are_refused() -> None:
    with pytest.raises(ValueError, match="not_before must be timezone-aware"):
        find_slot(PARIS, [], not_before=datetime(2026, 3, 4, 9))
    with pytest.raises(ValueError, match="timezone-aware"):
        Busy(room=1, starts_at=datetime(2026, 3, 4, 9), ends_at=utc(3, 4, 10))
    with pytest.raises(ValueError, match="ends_at must be after starts_at"):
        Busy(room=1, starts_at=utc(3, 4, 10), ends_at=utc(3, 4, 10))


def test_site_hours_are_validated() -> None:
    with pytest.raises(ValidationError, match="mon: 19:00 is not before 09:00"):
        SiteHours(timezone="Europe/Paris", opening_hours={"mon": ["19:00", "09:00"]}, rooms=1)
    with pytest.raises(ValidationError, match="unknown IANA timezone"):
        SiteHours(timezone="Europe/Atlantis", opening_hours={}, rooms=1)
    with pytest.raises(ValidationError):
        SiteHours(timezone="Europe/Paris", opening_hours={"mon": ["9h", "19h"]}, rooms=1)


def test_a_site_open_until_midnight() -> None:
    late = SiteHours(timezone="Europe/Paris", opening_hours={"fri": ["18:00", "24:00"]}, rooms=1)
    assert found(late, [], paris(3, 6, 23)).starts_at == paris(3, 6, 23)
    assert found(late, [], paris(3, 6, 23, 1)).starts_at == paris(3, 13, 18)


# --- numbing and rooms ---------------------------------------------------------------------------


def test_numbing_moves_the_first_start_and_reserves_the_room_before_it() -> None:
    slot = found(PARIS, [], paris(3, 3, 22), numbing_minutes=60)
    assert slot.starts_at == paris(3, 4, 10)
    assert slot.numbing_starts_at == slot.occupied_from == paris(3, 4, 9)
    # Room 1 is busy 09:00-09:30: its numbing would overlap, so room 2 at the same time...
    taken = [busy(1, paris(3, 4, 9), paris(3, 4, 9, 30))]
    assert found(PARIS, taken, paris(3, 3, 22), numbing_minutes=60).room == 2
    # ...and in a one-room site the numbing waits until 09:30, the session until 10:30.
    slot = found(PARIS_ONE_ROOM, taken, paris(3, 3, 22), numbing_minutes=60)
    assert (slot.numbing_starts_at, slot.starts_at) == (paris(3, 4, 9, 30), paris(3, 4, 10, 30))


def test_a_full_day_pushes_to_the_next_free_time() -> None:
    whole_day = [busy(1, paris(3, 4, 9), paris(3, 4, 19))]
    assert found(PARIS_ONE_ROOM, whole_day, paris(3, 4, 6)).starts_at == paris(3, 5, 9)
    morning = [busy(1, paris(3, 4, 9), paris(3, 4, 11, 15))]
    assert found(PARIS_ONE_ROOM, morning, paris(3, 4, 6)).starts_at == paris(3, 4, 11, 30)


def test_a_second_booking_at_the_same_time_gets_room_two() -> None:
    first = found(NYC, [], nyc(3, 3, 22))
    taken = [Busy(first.room, first.occupied_from, first.ends_at)]
    second = found(NYC, taken, nyc(3, 3, 22))
    assert (first.room, second.room, second.starts_at) == (1, 2, first.starts_at)
    taken.append(Busy(second.room, second.occupied_from, second.ends_at))
    third = found(NYC, taken, nyc(3, 3, 22))
    assert (third.room, third.starts_at) == (1, nyc(3, 4, 9))


def test_a_room_numbing_for_another_client_blocks_an_overlapping_session() -> None:
    # Another client is numbed 09:00-10:00 and treated 10:00-11:00 in the only room.
    taken = [busy(1, paris(3, 4, 9), paris(3, 4, 11))]
    assert found(PARIS_ONE_ROOM, taken, paris(3, 4, 8)).starts_at == paris(3, 4, 11)
    assert check_slot(PARIS_ONE_ROOM, taken, paris(3, 4, 9), not_before=paris(3, 4, 8)) == (
        SlotProblem.ROOM_TAKEN
    )


def test_back_to_back_is_allowed() -> None:
    taken = [busy(1, paris(3, 4, 9), paris(3, 4, 10))]
    slot = found(PARIS_ONE_ROOM, taken, paris(3, 4, 8))
    assert (slot.room, slot.starts_at) == (1, paris(3, 4, 10))
    slot = found(PARIS_ONE_ROOM, taken, paris(3, 4, 8), numbing_minutes=60)
    assert (slot.numbing_starts_at, slot.starts_at) == (paris(3, 4, 10), paris(3, 4, 11))
    # And the session before may end exactly when a busy interval begins.
    later = [busy(1, paris(3, 4, 10), paris(3, 4, 19))]
    assert found(PARIS_ONE_ROOM, later, paris(3, 4, 8)).starts_at == paris(3, 4, 9)


def test_busy_rooms_the_site_no_longer_has_are_ignored() -> None:
    taken = [busy(5, paris(3, 4, 9), paris(3, 4, 19))]
    assert found(PARIS_ONE_ROOM, taken, paris(3, 4, 8)).starts_at == paris(3, 4, 9)


# --- daylight saving -----------------------------------------------------------------------------


def test_paris_spring_forward_keeps_the_local_opening_time() -> None:
    # 29 March 2026: CET (+01:00) -> CEST (+02:00).
    assert found(PARIS, [], paris(3, 26, 20)).starts_at == utc(3, 27, 8)
    assert found(PARIS, [], paris(3, 27, 20)).starts_at == utc(3, 28, 9)
    assert found(PARIS, [], paris(3, 28, 18)).starts_at == utc(3, 30, 7)
    numbed = found(PARIS, [], paris(3, 28, 18), numbing_minutes=60)
    assert (numbed.numbing_starts_at, numbed.starts_at) == (utc(3, 30, 7), utc(3, 30, 8))


def test_paris_fall_back_keeps_the_local_opening_time() -> None:
    # 25 October 2026: CEST -> CET.
    assert found(PARIS, [], paris(10, 22, 20)).starts_at == utc(10, 23, 7)
    assert found(PARIS, [], paris(10, 24, 18)).starts_at == utc(10, 26, 8)


def test_new_york_spring_forward_keeps_the_local_opening_time() -> None:
    # 8 March 2026: EST (-05:00) -> EDT (-04:00).
    assert found(NYC, [], nyc(3, 5, 21)).starts_at == utc(3, 6, 13)
    assert found(NYC, [], nyc(3, 6, 21)).starts_at == utc(3, 7, 14)
    assert found(NYC, [], nyc(3, 7, 16)).starts_at == utc(3, 9, 12)


def test_new_york_fall_back_keeps_the_local_opening_time() -> None:
    # 1 November 2026: EDT -> EST.
    assert found(NYC, [], nyc(10, 29, 21)).starts_at == utc(10, 30, 12)
    assert found(NYC, [], nyc(10, 31, 16)).starts_at == utc(11, 2, 13)


def test_closing_time_follows_the_clock_change() -> None:
    # 18:00 UTC is 19:00 in Paris before the change (in hours) and 20:00 after it (closed).
    before, after = utc(3, 27, 17), utc(3, 30, 17)
    assert isinstance(check_slot(PARIS, [], before, not_before=utc(3, 1, 0)), Slot)
    assert check_slot(PARIS, [], after, not_before=utc(3, 1, 0)) is SlotProblem.CLOSED
    assert isinstance(check_slot(PARIS, [], utc(3, 30, 16), not_before=utc(3, 1, 0)), Slot)


# --- check_slot ----------------------------------------------------------------------------------

NOT_BEFORE = paris(3, 3, 12)


def test_check_slot_accepts_a_free_quarter_hour_in_the_lowest_free_room() -> None:
    taken = [busy(1, paris(3, 4, 9), paris(3, 4, 12))]
    slot = check_slot(PARIS, taken, paris(3, 4, 11, 45), not_before=NOT_BEFORE)
    assert slot == Slot(2, utc(3, 4, 10, 45), utc(3, 4, 11, 45), None)
    slot = check_slot(PARIS, [], paris(3, 4, 10, 15), not_before=NOT_BEFORE, numbing_minutes=60)
    assert slot == Slot(1, utc(3, 4, 9, 15), utc(3, 4, 10, 15), utc(3, 4, 8, 15))


@pytest.mark.parametrize(
    ("starts_at", "problem"),
    [
        (paris(3, 4, 10, 10), SlotProblem.MISALIGNED),
        (paris(3, 4, 10) + timedelta(seconds=30), SlotProblem.MISALIGNED),
        (paris(3, 3, 11), SlotProblem.TOO_SOON),
        (paris(3, 3, 8, 0), SlotProblem.TOO_SOON),
        (paris(3, 4, 8, 45), SlotProblem.CLOSED),  # before opening
        (paris(3, 4, 18, 15), SlotProblem.CLOSED),  # would end after closing
        (paris(3, 8, 11), SlotProblem.CLOSED),  # Sunday
        (paris(3, 7, 16, 15), SlotProblem.CLOSED),  # Saturday closes at 17:00
        (paris(3, 4, 18), None),  # the last session of the day
    ],
)
def test_check_slot_problems(starts_at: datetime, problem: SlotProblem | None) -> None:
    result = check_slot(PARIS, [], starts_at, not_before=NOT_BEFORE)
    if problem is None:
        assert isinstance(result, Slot)
    else:
        assert result is problem


def test_check_slot_counts_the_numbing_in_the_opening_hours() -> None:
    assert check_slot(PARIS, [], paris(3, 4, 9, 30), not_before=NOT_BEFORE) != SlotProblem.CLOSED
    result = check_slot(PARIS, [], paris(3, 4, 9, 30), not_before=NOT_BEFORE, numbing_minutes=60)
    assert result is SlotProblem.CLOSED


def test_check_slot_room_taken_only_when_every_room_is() -> None:
    taken = [busy(room, paris(3, 4, 10), paris(3, 4, 11)) for room in (1, 2)]
    assert isinstance(check_slot(PARIS, taken, paris(3, 4, 10), not_before=NOT_BEFORE), Slot)
    taken.append(busy(3, paris(3, 4, 9, 30), paris(3, 4, 10, 30)))
    result = check_slot(PARIS, taken, paris(3, 4, 10), not_before=NOT_BEFORE)
    assert result is SlotProblem.ROOM_TAKEN
    assert check_slot(PARIS, taken, paris(3, 4, 11), not_before=NOT_BEFORE) == Slot(
        1, utc(3, 4, 10), utc(3, 4, 11), None
    )


def test_check_slot_counts_the_numbing_in_the_room_and_allows_back_to_back() -> None:
    taken = [busy(1, paris(3, 4, 9), paris(3, 4, 10))]
    at_ten = paris(3, 4, 10)
    assert check_slot(PARIS_ONE_ROOM, taken, at_ten, not_before=NOT_BEFORE) == Slot(
        1, utc(3, 4, 9), utc(3, 4, 10), None
    )
    numbed = check_slot(PARIS_ONE_ROOM, taken, at_ten, not_before=NOT_BEFORE, numbing_minutes=60)
    assert numbed is SlotProblem.ROOM_TAKEN
    assert check_slot(
        PARIS_ONE_ROOM, taken, paris(3, 4, 11), not_before=NOT_BEFORE, numbing_minutes=60
    ) == Slot(1, utc(3, 4, 10), utc(3, 4, 11), utc(3, 4, 9))
    # A session ending exactly when the busy interval starts is allowed too.
    later = [busy(1, paris(3, 4, 11), paris(3, 4, 12))]
    assert isinstance(check_slot(PARIS_ONE_ROOM, later, at_ten, not_before=NOT_BEFORE), Slot)


def test_check_slot_on_the_new_york_site_after_the_clock_change() -> None:
    result = check_slot(NYC, [], nyc(3, 9, 8), not_before=nyc(3, 1, 0))
    assert result == Slot(1, utc(3, 9, 12), utc(3, 9, 13), None)
    assert check_slot(NYC, [], utc(3, 9, 11, 45), not_before=nyc(3, 1, 0)) is SlotProblem.CLOSED


# --- horizon and a dense calendar ----------------------------------------------------------------


def test_an_exhausted_horizon_gives_none() -> None:
    # From Saturday 18:00: Saturday is over and Sunday closed; Monday is the third day.
    assert find_slot(PARIS, [], not_before=paris(3, 7, 18), horizon_days=2) is None
    assert found(PARIS, [], paris(3, 7, 18), horizon_days=3).starts_at == paris(3, 9, 9)
    taken = [busy(1, paris(3, 1, 0), paris(9, 1, 0))]
    assert find_slot(PARIS_ONE_ROOM, taken, not_before=paris(3, 4, 8), horizon_days=180) is None


def reference(
    site: SiteHours, taken: list[Busy], not_before: datetime, numbing: int, step: int
) -> Slot | None:
    """Candidate by candidate, room by room, busy interval by busy interval."""
    zone = ZoneInfo(site.timezone)
    day = not_before.astimezone(zone).date()
    for offset in range(60):
        current = day + timedelta(days=offset)
        hours = site.opening_hours.get(list(Weekday)[current.weekday()])
        if not hours:
            continue
        opens = datetime.combine(current, time.fromisoformat(hours[0]), tzinfo=zone)
        closes = datetime.combine(current, time.fromisoformat(hours[1]), tzinfo=zone)
        start = opens + timedelta(minutes=numbing)
        while start + timedelta(hours=1) <= closes:
            occupied = (start - timedelta(minutes=numbing), start + timedelta(hours=1))
            if start >= not_before:
                for room in range(1, site.rooms + 1):
                    if not any(
                        b.room == room and b.starts_at < occupied[1] and occupied[0] < b.ends_at
                        for b in taken
                    ):
                        return Slot(
                            room,
                            start.astimezone(UTC),
                            occupied[1].astimezone(UTC),
                            occupied[0].astimezone(UTC) if numbing else None,
                        )
            start += timedelta(minutes=step)
    return None


@pytest.mark.parametrize("seed", range(40))
def test_find_slot_agrees_with_a_plain_search_on_a_busy_calendar(seed: int) -> None:
    rng = random.Random(seed)
    site = rng.choice([PARIS, NYC])
    zone = ZoneInfo(site.timezone)
    first = date(2026, 3, 2) + timedelta(days=rng.randrange(0, 240))
    taken = []
    for _ in range(rng.randrange(20, 120)):
        day = first + timedelta(days=rng.randrange(0, 6))
        begins = datetime.combine(day, time(rng.randrange(7, 20), rng.choice([0, 15, 30, 45])))
        begins = begins.replace(tzinfo=zone)
        ends = begins + timedelta(minutes=rng.choice([60, 90, 120, 240, 600]))
        taken.append(busy(rng.randrange(1, site.rooms + 1), begins, ends))
    not_before = datetime.combine(first, time(rng.randrange(0, 24), rng.randrange(0, 60)))
    not_before = not_before.replace(tzinfo=zone)
    numbing = rng.choice([0, 60])
    step = rng.choice([15, 30])
    expected = reference(site, taken, not_before, numbing, step)
    actual = find_slot(
        site, taken, not_before=not_before, numbing_minutes=numbing, step_minutes=step
    )
    assert actual == expected
