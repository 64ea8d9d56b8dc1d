"""When a plan counts as stalled (`clinicflow stalled`): pure, on the plan aggregate."""

from __future__ import annotations

from datetime import date, timedelta

from services.scheduler.domain.model import SessionStatus
from services.scheduler.domain.stalls import stall
from tests.unit.test_aggregates import NOW, completion, opened, session

HORIZON = timedelta(days=180)


def test_a_booked_first_session_is_not_stalled_and_a_cancelled_next_one_is() -> None:
    plan, _ = opened()
    assert stall(plan, "Europe/Paris", horizon=HORIZON, min_interval_days=15) is None
    upcoming = session(2, NOW + timedelta(days=40))
    plan.complete(plan.sessions[0], completion(NOW), timezone="Europe/Paris",
                  earliest=date(2031, 4, 2), upcoming=upcoming)  # fmt: skip
    assert stall(plan, "Europe/Paris", horizon=HORIZON, min_interval_days=15) is None
    plan.cancel(upcoming, "client_request")
    found = stall(plan, "Europe/Paris", horizon=HORIZON, min_interval_days=15)
    assert found is not None
    assert (found.reason, found.next_sequence, found.booked_at) == ("not_booked", 2, None)
    interval = plan.spec.interval_days or 0
    assert found.window_opens == NOW.date() + timedelta(days=interval)
    assert found.window_closes == found.window_opens + HORIZON


def test_a_session_booked_beyond_the_horizon_is_outside_its_window() -> None:
    plan, _ = opened()
    late = NOW + timedelta(days=200)
    plan.sessions[0] = session(1, late)
    found = stall(plan, "Europe/Paris", horizon=HORIZON, min_interval_days=15)
    assert found is not None
    assert (found.reason, found.booked_at) == ("outside_window", late)


def test_a_finished_plan_is_never_stalled() -> None:
    plan, _ = opened()
    plan.cancel(plan.sessions[0], "client_erased")
    assert plan.sessions[0].status is SessionStatus.CANCELLED
    assert stall(plan, "Europe/Paris", horizon=HORIZON, min_interval_days=15) is None
