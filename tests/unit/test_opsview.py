"""The ops page's board: stages per site from workflow events, whatever order and repeats they
come in; dead-letter errors from headers; lag totals; nothing personal in a snapshot."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from shared.envelope import Event, build, parse
from shared.events import (
    EventData,
    ScreeningFailed,
    ScreeningPassed,
    SessionCancelled,
    SessionCompleted,
    SessionScheduled,
    SiteUpdated,
)
from shared.lag import PartitionLag
from shared.opsview import ERROR_CHARS, DeadLetterError, OpsBoard, Stage, dead_letter_error

PREFIX = "clinic."
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PLAN = uuid4()


def event(data: EventData, at: datetime, event_id: UUID | None = None) -> Event:
    record = build(data, source="tests", prefix=PREFIX, time=at, event_id=event_id)
    assert record.value is not None
    return parse(record.value, prefix=PREFIX)


def passed(client: str, site: str = "paris-01") -> ScreeningPassed:
    return ScreeningPassed(
        screening_id=uuid4(), client_id=client, site_id=site, areas=["face"],
        concerns=["acne_scars"], severity="severe", skin_sensitivity="normal",
        policy_version="1", screened_at=T0, valid_until=T0 + timedelta(days=90),
    )  # fmt: skip


def failed(client: str, site: str = "paris-01") -> ScreeningFailed:
    return ScreeningFailed(
        screening_id=uuid4(), client_id=client, site_id=site, outcome="declined",
        reasons=["ROSACEA"], recheck_after=None, policy_version="1", screened_at=T0,
    )  # fmt: skip


def scheduled(client: str, sequence: int, site: str = "paris-01") -> SessionScheduled:
    starts = T0 + timedelta(days=30 * sequence)
    return SessionScheduled(
        session_id=uuid4(), plan_id=PLAN, client_id=client, site_id=site, sequence=sequence,
        total_sessions=2, starts_at=starts, ends_at=starts + timedelta(hours=1),
        needle_depth_mm=1.0,
    )  # fmt: skip


def completed(client: str, sequence: int, site: str = "paris-01") -> SessionCompleted:
    return SessionCompleted(
        session_id=uuid4(), plan_id=PLAN, client_id=client, site_id=site,
        timezone="Europe/Paris", sequence=sequence, total_sessions=2, completed_at=T0,
        needle_depth_mm=1.0, areas=["face"], anesthetic_used=True, bleeding=False,
        next_session_earliest=date(2026, 12, 1) if sequence < 2 else None,
    )  # fmt: skip


def cancelled(client: str, reason: str) -> SessionCancelled:
    return SessionCancelled(
        session_id=uuid4(), plan_id=PLAN, client_id=client, site_id="paris-01", reason=reason
    )


def site(site_id: str, name: str) -> SiteUpdated:
    return SiteUpdated(
        site_id=site_id, name=name, timezone="Europe/Paris",
        opening_hours={"mon": ["09:00", "18:00"]}, rooms=2,
    )  # fmt: skip


def stages(board: OpsBoard, site_id: str = "paris-01") -> dict[Stage, int]:
    [counts] = [s for s in board.snapshot(lambda _: True).sites if s.site_id == site_id]
    return {stage: n for stage, n in counts.stages.items() if n}


def test_a_client_moves_through_the_stages_of_its_plan() -> None:
    board = OpsBoard()
    steps: list[tuple[EventData, dict[Stage, int]]] = [
        (passed("c-1"), {Stage.AWAITING_BOOKING: 1}),
        (scheduled("c-1", 1), {Stage.BOOKED: 1}),
        (completed("c-1", 1), {Stage.AWAITING_BOOKING: 1}),
        (scheduled("c-1", 2), {Stage.BOOKED: 1}),
        (completed("c-1", 2), {Stage.TREATED: 1}),
    ]
    for minute, (data, expected) in enumerate(steps):
        assert board.apply(event(data, T0 + timedelta(minutes=minute)))
        assert stages(board) == expected


def test_each_client_counts_once_at_its_own_site() -> None:
    board = OpsBoard()
    for data in (passed("c-1"), failed("c-2"), passed("c-3", "nyc-01"), cancelled("c-4", "ill")):
        board.apply(event(data, T0))
    assert stages(board) == {
        Stage.AWAITING_BOOKING: 1,
        Stage.SCREENED_OUT: 1,
        Stage.CANCELLED: 1,
    }
    assert stages(board, "nyc-01") == {Stage.AWAITING_BOOKING: 1}


def test_a_booking_written_with_its_completion_follows_it() -> None:
    """The scheduler writes a completion and the next booking at once: same time, and the
    topics are read in no order between them."""
    board = OpsBoard()
    board.apply(event(scheduled("c-1", 2), T0))
    board.apply(event(completed("c-1", 1), T0))
    assert stages(board) == {Stage.BOOKED: 1}


def test_late_and_repeated_events_change_nothing() -> None:
    board = OpsBoard()
    booking = event(scheduled("c-1", 1), T0 + timedelta(minutes=5))
    assert board.apply(booking)
    assert not board.apply(event(passed("c-1"), T0)), "older than the stage it holds"
    assert not board.apply(booking), "a repeat"
    assert stages(board) == {Stage.BOOKED: 1}


def test_sites_are_listed_with_every_stage_before_any_client_and_filtered_by_caller() -> None:
    board = OpsBoard()
    assert board.apply(event(site("paris-01", "Paris Opéra"), T0))
    assert not board.apply(event(site("paris-01", "Paris Opéra"), T0)), "nothing changed"
    board.apply(event(site("nyc-01", "New York Flatiron"), T0))
    shown = board.snapshot(lambda site_id: site_id == "nyc-01").sites
    assert [(s.site_id, s.name) for s in shown] == [("nyc-01", "New York Flatiron")]
    assert shown[0].stages == dict.fromkeys(Stage, 0)


def test_a_snapshot_holds_ids_and_counts_only() -> None:
    board = OpsBoard()
    board.apply(event(failed("c-1"), T0))
    board.apply(event(cancelled("c-2", "moving to Lyon"), T0))
    shown = board.snapshot(lambda _: True).model_dump_json()
    for private in ("ROSACEA", "moving to Lyon", "c-1", "c-2"):
        assert private not in shown


def headers(**overrides: str) -> list[tuple[str, bytes]]:
    found = {
        "dlq-error": "data invalid for screening_passed: site_id: String should match pattern",
        "dlq-error-type": "EventError",
        "dlq-original-topic": "clinic.screening_passed",
        "dlq-original-partition": "2",
        "dlq-original-offset": "41",
        "dlq-consumer-group": "clinic.scheduler",
        "dlq-failed-at": T0.isoformat(),
    } | overrides
    return [("content-type", b"application/cloudevents+json")] + [
        (name, value.encode()) for name, value in found.items()
    ]


def test_dead_letter_headers_give_the_error_and_where_it_came_from() -> None:
    error = dead_letter_error(headers(**{"dlq-error": "x" * 1000}))
    assert error == DeadLetterError(
        failed_at=T0,
        topic="clinic.screening_passed",
        where="clinic.screening_passed:2:41",
        group="clinic.scheduler",
        error_type="EventError",
        error="x" * ERROR_CHARS,
    )


@pytest.mark.parametrize(
    "broken",
    [{"dlq-error": None}, {"dlq-failed-at": "yesterday"}, {"dlq-failed-at": "2026-11-02T09:00"}],
)
def test_records_without_our_dead_letter_headers_are_not_errors(
    broken: dict[str, str | None],
) -> None:
    kept = [(k, v) for k, v in headers() if k not in broken or broken[k] is not None]
    changed = [(k, (broken[k] or "").encode() if k in broken else v) for k, v in kept]
    assert dead_letter_error(changed) is None


def test_only_the_newest_errors_are_kept_newest_first() -> None:
    board = OpsBoard(errors_kept=2)
    times = [T0 + timedelta(minutes=m) for m in (5, 1, 9)]
    noted = []
    for at in times:
        error = dead_letter_error(headers(**{"dlq-failed-at": at.isoformat()}))
        assert error is not None
        noted.append(board.note_error(error))
    assert noted == [True, True, True]
    older = dead_letter_error(headers(**{"dlq-failed-at": T0.isoformat()}))
    assert older is not None
    assert not board.note_error(older), "older than every kept error"
    assert [e.failed_at for e in board.snapshot(lambda _: True).errors] == [times[2], times[0]]


def test_lag_is_summed_per_group_and_topic() -> None:
    board = OpsBoard()
    lags = [
        PartitionLag("clinic.notifier", "clinic.session_completed", 0, 5, 9, 4),
        PartitionLag("clinic.notifier", "clinic.session_completed", 1, None, 3, 3),
        PartitionLag("clinic.scheduler", "clinic.screening_passed", 0, 7, 7, 0),
    ]
    depths = {"clinic.screening_passed.dlq": 2}
    assert board.set_lag(lags, depths)
    assert not board.set_lag(lags, depths), "nothing changed"
    shown = board.snapshot(lambda _: True)
    assert [(g.group, g.topic, g.lag) for g in shown.lag] == [
        ("clinic.notifier", "clinic.session_completed", 7),
        ("clinic.scheduler", "clinic.screening_passed", 0),
    ]
    assert shown.dead_letters == depths
