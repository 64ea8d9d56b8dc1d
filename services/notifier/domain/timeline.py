"""The aftercare timeline: which steps a session gets, when each is due, and what it says.

The steps are data. `STEPS` below is SPEC section 5's table (plus `maintenance`, the reminder
SPEC section 4 gives a one-session plan); the texts come from `catalogue`. `after_session` and
`before_session` are the whole rule: pure, synchronous, no I/O, no clock (the caller passes `now`).
Nobody is messaged at night: a step falling between 21:00 and 08:00 in the site's timezone waits
for 08:00 local, except `immediate`, which is read as the client leaves the clinic.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from services.notifier.domain.catalogue import text_for
from shared.events import SessionCompleted
from shared.vocabulary import AftercareStep, Locale, UtcDatetime


class Anchor(StrEnum):
    """The instant a step's offset counts from."""

    COMPLETED = "completed"  # the session just completed
    NEXT_SESSION = "next_session"  # the start of the next booked session


class When(StrEnum):
    """Which sessions a step follows."""

    ALWAYS = "always"
    LAST_SESSION = "last_session"  # the last session of a plan
    ONE_SESSION_PLAN = "one_session_plan"  # the only session of a plan


class StepRule(BaseModel):
    """One row of the table: `step` is due `offset` after (or before) its `anchor`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: AftercareStep
    anchor: Anchor
    offset: timedelta
    when: When = When.ALWAYS
    night_shift: bool = True


STEPS: list[StepRule] = [
    StepRule(
        step=AftercareStep.IMMEDIATE,
        anchor=Anchor.COMPLETED,
        offset=timedelta(0),
        night_shift=False,
    ),
    StepRule(step=AftercareStep.DAY_1, anchor=Anchor.COMPLETED, offset=timedelta(days=1)),
    StepRule(step=AftercareStep.DAY_3, anchor=Anchor.COMPLETED, offset=timedelta(days=3)),
    StepRule(step=AftercareStep.DAY_7, anchor=Anchor.COMPLETED, offset=timedelta(days=7)),
    StepRule(step=AftercareStep.DAY_15, anchor=Anchor.COMPLETED, offset=timedelta(days=15)),
    StepRule(
        step=AftercareStep.NEXT_SESSION, anchor=Anchor.NEXT_SESSION, offset=timedelta(days=-2)
    ),
    StepRule(
        step=AftercareStep.TOUCH_UP,
        anchor=Anchor.COMPLETED,
        offset=timedelta(days=365),
        when=When.LAST_SESSION,
    ),
    # The scheduler's mild plan asks for this reminder at +90 days (SPEC section 4).
    StepRule(
        step=AftercareStep.MAINTENANCE,
        anchor=Anchor.COMPLETED,
        offset=timedelta(days=90),
        when=When.ONE_SESSION_PLAN,
    ),
]

NIGHT_START = time(21, 0)
MORNING = time(8, 0)

_APPLIES: dict[When, Callable[[SessionCompleted], bool]] = {
    When.ALWAYS: lambda completed: True,
    When.LAST_SESSION: lambda completed: completed.sequence >= completed.total_sessions,
    When.ONE_SESSION_PLAN: lambda completed: completed.total_sessions == 1,
}


class PlannedStep(BaseModel):
    """A step of one client's timeline, ready to be stored and delivered at `due_at`."""

    model_config = ConfigDict(frozen=True)

    step: AftercareStep
    due_at: UtcDatetime
    title: str
    instructions: list[str] = Field(min_length=1)


def shift_out_of_night(due: datetime, timezone: str) -> datetime:
    """`due` in UTC, moved to 08:00 local when it falls between 21:00 and 08:00 in `timezone`.
    The morning is built on the local calendar, so a DST change that night cannot move it."""
    if due.tzinfo is None:
        raise ValueError("due must be timezone-aware")
    zone = ZoneInfo(timezone)
    local = due.astimezone(zone)
    if local.time() >= NIGHT_START:
        morning = local.date() + timedelta(days=1)
    elif local.time() < MORNING:
        morning = local.date()
    else:
        return due.astimezone(UTC)
    return datetime.combine(morning, MORNING, tzinfo=zone).astimezone(UTC)


def after_session(completed: SessionCompleted, locale: Locale) -> list[PlannedStep]:
    """The steps a completed session sets off, soonest first: every day-step, the yearly touch-up
    after a plan's last session, and maintenance after a one-session plan. `next_session` is not
    among them: it follows the booking of that session (`before_session`)."""
    planned: list[PlannedStep] = []
    for rule in STEPS:
        if rule.anchor is not Anchor.COMPLETED or not _APPLIES[rule.when](completed):
            continue
        due = completed.completed_at + rule.offset
        if rule.night_shift:
            due = shift_out_of_night(due, completed.timezone)
        text = text_for(
            rule.step,
            locale,
            bleeding=completed.bleeding,
            has_next_session=completed.next_session_earliest is not None,
        )
        planned.append(
            PlannedStep(
                step=rule.step, due_at=due, title=text.title, instructions=text.instructions
            )
        )
    return sorted(planned, key=lambda p: p.due_at)


def before_session(
    starts_at: datetime, timezone: str, locale: Locale, *, now: datetime
) -> PlannedStep:
    """The reminder of a booked session: 2 days before it, or `now` when the booking came later;
    out of the night like any step, unless waiting for the morning would pass the session."""
    rule = next(r for r in STEPS if r.step is AftercareStep.NEXT_SESSION)
    if starts_at.tzinfo is None or now.tzinfo is None:
        raise ValueError("starts_at and now must be timezone-aware")
    # In UTC, so the offset counts real hours whatever zone the caller's datetimes carry.
    starts_at, now = starts_at.astimezone(UTC), now.astimezone(UTC)
    earliest = max(starts_at + rule.offset, now)
    due = shift_out_of_night(earliest, timezone) if rule.night_shift else earliest
    if due >= starts_at:
        due = earliest
    text = text_for(rule.step, locale, next_session_local=starts_at.astimezone(ZoneInfo(timezone)))
    return PlannedStep(step=rule.step, due_at=due, title=text.title, instructions=text.instructions)
