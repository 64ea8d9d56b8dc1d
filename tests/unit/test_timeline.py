"""The aftercare timeline: SPEC section 5's step table, the night rule across DST, which sessions
get a touch-up or maintenance, and the reminder before a booked session."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest

from services.notifier.domain.catalogue import text_for
from services.notifier.domain.timeline import (
    MORNING,
    NIGHT_START,
    STEPS,
    Anchor,
    PlannedStep,
    When,
    after_session,
    before_session,
    shift_out_of_night,
)
from shared.events import SessionCompleted
from shared.vocabulary import AftercareStep, Area, Locale

PARIS = "Europe/Paris"
NEW_YORK = "America/New_York"
DEMO_ZONES = [PARIS, NEW_YORK]
DAY_STEPS = [
    AftercareStep.IMMEDIATE,
    AftercareStep.DAY_1,
    AftercareStep.DAY_3,
    AftercareStep.DAY_7,
    AftercareStep.DAY_15,
]


def local(tz: str, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """A wall-clock time in `tz`, e.g. local(PARIS, 2026, 6, 10, 22, 0)."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz))


def wall(moment: datetime, tz: str) -> datetime:
    """What the clinic's clock shows at `moment`, without the zone (for easy comparison)."""
    return moment.astimezone(ZoneInfo(tz)).replace(tzinfo=None)


def session(
    at: datetime,
    *,
    tz: str = PARIS,
    sequence: int = 2,
    total: int = 6,
    bleeding: bool = False,
    next_earliest: date | None = date(2027, 1, 1),
) -> SessionCompleted:
    return SessionCompleted(
        session_id=uuid4(),
        plan_id=uuid4(),
        client_id="c-1",
        site_id="paris-01",
        timezone=tz,
        sequence=sequence,
        total_sessions=total,
        completed_at=at,
        needle_depth_mm=1.0,
        areas=[Area.FACE],
        anesthetic_used=False,
        bleeding=bleeding,
        next_session_earliest=next_earliest,
    )


def by_step(planned: list[PlannedStep]) -> dict[AftercareStep, PlannedStep]:
    steps = {p.step: p for p in planned}
    assert len(steps) == len(planned), "a step planned twice"
    return steps


# --- the table ---------------------------------------------------------------------------------


def test_the_table_is_the_spec_table() -> None:
    rows = {rule.step: (rule.anchor, rule.offset, rule.when, rule.night_shift) for rule in STEPS}
    assert len(rows) == len(STEPS) == len(AftercareStep)
    day = timedelta(days=1)
    assert rows == {
        AftercareStep.IMMEDIATE: (Anchor.COMPLETED, 0 * day, When.ALWAYS, False),
        AftercareStep.DAY_1: (Anchor.COMPLETED, 1 * day, When.ALWAYS, True),
        AftercareStep.DAY_3: (Anchor.COMPLETED, 3 * day, When.ALWAYS, True),
        AftercareStep.DAY_7: (Anchor.COMPLETED, 7 * day, When.ALWAYS, True),
        AftercareStep.DAY_15: (Anchor.COMPLETED, 15 * day, When.ALWAYS, True),
        AftercareStep.NEXT_SESSION: (Anchor.NEXT_SESSION, -2 * day, When.ALWAYS, True),
        AftercareStep.TOUCH_UP: (Anchor.COMPLETED, 365 * day, When.LAST_SESSION, True),
        AftercareStep.MAINTENANCE: (Anchor.COMPLETED, 90 * day, When.ONE_SESSION_PLAN, True),
    }
    assert (NIGHT_START.isoformat(), MORNING.isoformat()) == ("21:00:00", "08:00:00")


# --- the night rule ----------------------------------------------------------------------------


@pytest.mark.parametrize("tz", DEMO_ZONES)
@pytest.mark.parametrize(
    ("clock", "expected"),
    [
        (datetime(2026, 6, 10, 8, 0), datetime(2026, 6, 10, 8, 0)),
        (datetime(2026, 6, 10, 12, 0), datetime(2026, 6, 10, 12, 0)),
        (datetime(2026, 6, 10, 20, 59), datetime(2026, 6, 10, 20, 59)),
        (datetime(2026, 6, 10, 21, 0), datetime(2026, 6, 11, 8, 0)),
        (datetime(2026, 6, 10, 23, 59), datetime(2026, 6, 11, 8, 0)),
        (datetime(2026, 6, 11, 0, 0), datetime(2026, 6, 11, 8, 0)),
        (datetime(2026, 6, 11, 3, 0), datetime(2026, 6, 11, 8, 0)),
        (datetime(2026, 6, 11, 7, 59), datetime(2026, 6, 11, 8, 0)),
        (datetime(2026, 12, 31, 22, 0), datetime(2027, 1, 1, 8, 0)),
        (datetime(2026, 1, 15, 21, 30), datetime(2026, 1, 16, 8, 0)),
    ],
)
def test_night_steps_wait_for_eight_in_the_morning_local(
    tz: str, clock: datetime, expected: datetime
) -> None:
    shifted = shift_out_of_night(clock.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC), tz)
    assert shifted.utcoffset() == timedelta(0)
    assert wall(shifted, tz) == expected


@pytest.mark.parametrize(
    ("tz", "due_utc", "expected_utc"),
    [
        # Paris springs forward on 2026-03-29 at 01:00 UTC (02:00 CET -> 03:00 CEST).
        (PARIS, datetime(2026, 3, 29, 2, 30, tzinfo=UTC), datetime(2026, 3, 29, 6, 0, tzinfo=UTC)),
        (PARIS, datetime(2026, 3, 28, 21, 30, tzinfo=UTC), datetime(2026, 3, 29, 6, 0, tzinfo=UTC)),
        # ... and falls back on 2026-10-25 at 01:00 UTC (03:00 CEST -> 02:00 CET).
        (
            PARIS,
            datetime(2026, 10, 24, 20, 0, tzinfo=UTC),
            datetime(2026, 10, 25, 7, 0, tzinfo=UTC),
        ),
        # New York springs forward on 2026-03-08 at 07:00 UTC (02:00 EST -> 03:00 EDT).
        (NEW_YORK, datetime(2026, 3, 8, 3, 0, tzinfo=UTC), datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
        (
            NEW_YORK,
            datetime(2026, 3, 8, 7, 30, tzinfo=UTC),
            datetime(2026, 3, 8, 12, 0, tzinfo=UTC),
        ),
        # ... and falls back on 2026-11-01 at 06:00 UTC; 05:30 UTC is the first 01:30 (EDT).
        (
            NEW_YORK,
            datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
            datetime(2026, 11, 1, 13, 0, tzinfo=UTC),
        ),
    ],
)
def test_the_morning_is_eight_on_the_local_clock_across_dst(
    tz: str, due_utc: datetime, expected_utc: datetime
) -> None:
    shifted = shift_out_of_night(due_utc, tz)
    assert shifted == expected_utc
    assert wall(shifted, tz).time() == MORNING


def test_a_day_time_step_comes_back_in_utc_unchanged() -> None:
    due = local(NEW_YORK, 2026, 6, 10, 14, 0)
    shifted = shift_out_of_night(due, NEW_YORK)
    assert shifted == due
    assert shifted.tzinfo is UTC


def test_a_naive_due_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        shift_out_of_night(datetime(2026, 6, 10, 22, 0), PARIS)


# --- after a session ---------------------------------------------------------------------------


@pytest.mark.parametrize("tz", DEMO_ZONES)
def test_a_day_time_session_gets_each_step_at_its_offset(tz: str) -> None:
    done = local(tz, 2026, 6, 10, 15, 0).astimezone(UTC)
    steps = by_step(after_session(session(done, tz=tz), Locale.EN))
    assert list(steps) == DAY_STEPS
    assert {s: p.due_at - done for s, p in steps.items()} == {
        AftercareStep.IMMEDIATE: timedelta(0),
        AftercareStep.DAY_1: timedelta(days=1),
        AftercareStep.DAY_3: timedelta(days=3),
        AftercareStep.DAY_7: timedelta(days=7),
        AftercareStep.DAY_15: timedelta(days=15),
    }
    assert all(p.due_at.tzinfo is UTC for p in steps.values())


@pytest.mark.parametrize("tz", DEMO_ZONES)
def test_immediate_is_never_moved_out_of_the_night(tz: str) -> None:
    done = local(tz, 2026, 6, 10, 22, 30)
    steps = by_step(after_session(session(done, tz=tz), Locale.EN))
    assert steps[AftercareStep.IMMEDIATE].due_at == done
    assert wall(steps[AftercareStep.IMMEDIATE].due_at, tz) == datetime(2026, 6, 10, 22, 30)


@pytest.mark.parametrize("tz", DEMO_ZONES)
def test_a_late_session_has_its_day_steps_the_following_mornings(tz: str) -> None:
    # Completed Wednesday 22:00: day 1 falls Thursday 22:00, so it waits for Friday 08:00.
    done = local(tz, 2026, 6, 10, 22, 0)
    steps = by_step(after_session(session(done, tz=tz), Locale.EN))
    assert {s: wall(p.due_at, tz) for s, p in steps.items()} == {
        AftercareStep.IMMEDIATE: datetime(2026, 6, 10, 22, 0),
        AftercareStep.DAY_1: datetime(2026, 6, 12, 8, 0),
        AftercareStep.DAY_3: datetime(2026, 6, 14, 8, 0),
        AftercareStep.DAY_7: datetime(2026, 6, 18, 8, 0),
        AftercareStep.DAY_15: datetime(2026, 6, 26, 8, 0),
    }


def test_a_day_step_falling_on_the_dst_night_waits_for_the_local_morning() -> None:
    # Saturday 2026-03-28 02:30 UTC (03:30 CET) + 1 day = Sunday 02:30 UTC, 04:30 CEST.
    done = datetime(2026, 3, 28, 2, 30, tzinfo=UTC)
    steps = by_step(after_session(session(done, tz=PARIS), Locale.EN))
    assert steps[AftercareStep.IMMEDIATE].due_at == done
    assert steps[AftercareStep.DAY_1].due_at == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)


def test_the_last_session_of_a_plan_gets_the_yearly_touch_up_and_no_maintenance() -> None:
    done = local(PARIS, 2026, 6, 10, 15, 0)
    last = session(done, sequence=6, total=6, next_earliest=None)
    steps = by_step(after_session(last, Locale.EN))
    assert list(steps) == [*DAY_STEPS, AftercareStep.TOUCH_UP]
    assert steps[AftercareStep.TOUCH_UP].due_at == done + timedelta(days=365)


def test_a_one_session_plan_gets_maintenance_at_90_days_and_the_touch_up() -> None:
    done = local(NEW_YORK, 2026, 6, 10, 15, 0)
    only = session(done, tz=NEW_YORK, sequence=1, total=1, next_earliest=None)
    steps = by_step(after_session(only, Locale.EN))
    assert list(steps) == [*DAY_STEPS, AftercareStep.MAINTENANCE, AftercareStep.TOUCH_UP]
    assert steps[AftercareStep.MAINTENANCE].due_at == done + timedelta(days=90)
    assert steps[AftercareStep.TOUCH_UP].due_at == done + timedelta(days=365)


@pytest.mark.parametrize(("sequence", "total"), [(1, 6), (3, 6), (5, 6), (1, 4)])
def test_a_session_in_the_middle_of_a_plan_gets_neither(sequence: int, total: int) -> None:
    done = local(PARIS, 2026, 6, 10, 15, 0)
    steps = after_session(session(done, sequence=sequence, total=total), Locale.EN)
    assert [p.step for p in steps] == DAY_STEPS


def test_a_late_touch_up_is_moved_out_of_the_night_too() -> None:
    done = local(PARIS, 2026, 6, 10, 22, 0)
    steps = by_step(
        after_session(session(done, sequence=1, total=1, next_earliest=None), Locale.FR)
    )
    assert wall(steps[AftercareStep.TOUCH_UP].due_at, PARIS) == datetime(2027, 6, 11, 8, 0)
    assert wall(steps[AftercareStep.MAINTENANCE].due_at, PARIS) == datetime(2026, 9, 9, 8, 0)


@pytest.mark.parametrize("locale", list(Locale))
def test_the_texts_are_the_catalogues_for_that_session(locale: Locale) -> None:
    done = local(PARIS, 2026, 6, 10, 15, 0)
    for bleeding in (False, True):
        for next_earliest in (None, date(2026, 6, 25)):
            completed = session(done, bleeding=bleeding, next_earliest=next_earliest)
            for planned in after_session(completed, locale):
                expected = text_for(
                    planned.step,
                    locale,
                    bleeding=bleeding,
                    has_next_session=next_earliest is not None,
                )
                assert (planned.title, planned.instructions) == (
                    expected.title,
                    expected.instructions,
                )


@pytest.mark.parametrize(("locale", "scabs"), [(Locale.EN, "scabs"), (Locale.FR, "croûtes")])
def test_day_3_speaks_of_scabs_only_after_bleeding(locale: Locale, scabs: str) -> None:
    done = local(PARIS, 2026, 6, 10, 15, 0)

    def day_3(bleeding: bool) -> str:
        steps = by_step(after_session(session(done, bleeding=bleeding), locale))
        return " ".join(steps[AftercareStep.DAY_3].instructions)

    assert scabs in day_3(True)
    assert scabs not in day_3(False)


@pytest.mark.parametrize(
    ("locale", "window"), [(Locale.EN, "next session"), (Locale.FR, "prochaine séance")]
)
def test_day_15_opens_the_window_only_when_a_session_follows(locale: Locale, window: str) -> None:
    done = local(PARIS, 2026, 6, 10, 15, 0)

    def day_15(next_earliest: date | None) -> str:
        steps = by_step(after_session(session(done, next_earliest=next_earliest), locale))
        return " ".join(steps[AftercareStep.DAY_15].instructions)

    assert window in day_15(date(2026, 6, 25))
    assert window not in day_15(None)


# --- before a booked session -------------------------------------------------------------------

LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("tz", DEMO_ZONES)
def test_the_reminder_is_two_days_before_the_session(tz: str) -> None:
    starts = local(tz, 2026, 12, 8, 14, 0)
    reminder = before_session(starts, tz, Locale.EN, now=LONG_AGO)
    assert reminder.step is AftercareStep.NEXT_SESSION
    assert reminder.due_at == starts - timedelta(days=2)
    assert reminder.due_at.tzinfo is UTC


@pytest.mark.parametrize("tz", DEMO_ZONES)
def test_an_early_session_is_reminded_at_eight_not_in_the_night(tz: str) -> None:
    starts = local(tz, 2026, 12, 8, 7, 30)
    reminder = before_session(starts, tz, Locale.EN, now=LONG_AGO)
    assert wall(reminder.due_at, tz) == datetime(2026, 12, 6, 8, 0)


def test_the_two_days_count_in_hours_across_dst() -> None:
    # 2026-03-30 08:30 CEST minus 48 hours is 2026-03-28 07:30 CET: night, so 08:00 CET.
    starts = local(PARIS, 2026, 3, 30, 8, 30)
    reminder = before_session(starts, PARIS, Locale.EN, now=LONG_AGO)
    assert wall(reminder.due_at, PARIS) == datetime(2026, 3, 28, 8, 0)


@pytest.mark.parametrize("tz", DEMO_ZONES)
def test_a_session_booked_less_than_two_days_ahead_is_reminded_now(tz: str) -> None:
    now = local(tz, 2026, 12, 7, 11, 0).astimezone(UTC)
    starts = local(tz, 2026, 12, 8, 14, 0)
    assert before_session(starts, tz, Locale.EN, now=now).due_at == now


def test_a_booking_made_at_night_is_reminded_in_the_morning() -> None:
    now = local(PARIS, 2026, 12, 7, 23, 0)
    starts = local(PARIS, 2026, 12, 8, 10, 0)
    reminder = before_session(starts, PARIS, Locale.EN, now=now)
    assert wall(reminder.due_at, PARIS) == datetime(2026, 12, 8, 8, 0)


def test_a_naive_session_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        before_session(datetime(2026, 12, 8, 14, 0), PARIS, Locale.EN, now=LONG_AGO)


def test_the_morning_never_passes_the_session_itself() -> None:
    now = local(PARIS, 2026, 12, 7, 23, 0)
    starts = local(PARIS, 2026, 12, 8, 7, 30)
    assert before_session(starts, PARIS, Locale.EN, now=now).due_at == now


@pytest.mark.parametrize(
    ("tz", "locale", "expected"),
    [
        (PARIS, Locale.EN, "Tuesday 8 December at 14:00"),
        (PARIS, Locale.FR, "mardi 8 décembre à 14:00"),
        (NEW_YORK, Locale.EN, "Tuesday 8 December at 14:00"),
        (NEW_YORK, Locale.FR, "mardi 8 décembre à 14:00"),
    ],
)
def test_the_reminder_gives_the_session_in_the_sites_local_time(
    tz: str, locale: Locale, expected: str
) -> None:
    starts_utc = local(tz, 2026, 12, 8, 14, 0).astimezone(UTC)
    reminder = before_session(starts_utc, tz, locale, now=LONG_AGO)
    assert any(expected in line for line in reminder.instructions), reminder.instructions
    assert reminder.title == text_for(AftercareStep.NEXT_SESSION, locale).title


def test_the_reminder_date_is_the_local_day_not_the_utc_day() -> None:
    # 21:30 in New York on Monday 7 December is already Tuesday 02:30 in UTC.
    starts = local(NEW_YORK, 2026, 12, 7, 21, 30)
    reminder = before_session(starts, NEW_YORK, Locale.EN, now=LONG_AGO)
    assert any("Monday 7 December at 21:30" in line for line in reminder.instructions)
