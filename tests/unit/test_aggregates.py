"""The aggregates' own behaviour, without I/O: what each method changes and which events it
records (the unit of work only commits what they decide)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from services.notifier.domain.steps import (
    WEBHOOK_RETRIES,
    Delivery,
    DeliveryStatus,
    RetrySchedule,
    Step,
    StepStatus,
)
from services.notifier.domain.webhooks import SigningSecret, Webhook, secret_problem
from services.scheduler.domain.model import (
    Completion,
    Plan,
    PlanStatus,
    Session,
    SessionStatus,
)
from services.scheduler.domain.plans import DEFAULT_RULES, PlanInput, plan_for
from services.scheduler.domain.rooms import RoomDay
from services.scheduler.domain.slots import Slot
from shared.aggregate import Recorded
from shared.errors import Conflict
from shared.events import (
    AftercareDue,
    EventKind,
    ScreeningPassed,
    SessionCancelled,
    SessionCompleted,
    SessionScheduled,
)
from shared.examples import EXAMPLES
from shared.vocabulary import AftercareStep, Area, Locale

NOW = datetime(2031, 3, 3, 12, 0, tzinfo=UTC)


def session(sequence: int, at: datetime) -> Session:
    return Session(session_id=uuid.uuid4(), sequence=sequence, starts_at=at,
                   ends_at=at + timedelta(hours=1), numbing_starts_at=None, room=1)  # fmt: skip


def opened() -> tuple[Plan, uuid.UUID]:
    passed = EXAMPLES[EventKind.SCREENING_PASSED]
    assert isinstance(passed, ScreeningPassed)
    spec = plan_for(PlanInput(areas=passed.areas, concerns=passed.concerns,
                              severity=passed.severity,
                              skin_sensitivity=passed.skin_sensitivity), DEFAULT_RULES)  # fmt: skip
    cause = uuid.uuid4()
    plan = Plan.open(uuid.uuid4(), passed, spec, session(1, NOW + timedelta(days=1)),
                     correlation_id=cause, cause=cause, now=NOW)  # fmt: skip
    return plan, cause


def recorded(plan: Plan | Step) -> list[Recorded]:
    items = plan.collect()
    assert all(isinstance(item, Recorded) for item in items)
    return [item for item in items if isinstance(item, Recorded)]


def completion(at: datetime) -> Completion:
    return Completion(completed_at=at, needle_depth_mm=1.0, areas=[Area.FACE],
                      anesthetic_used=True, bleeding=False, practitioner_id="p-1")  # fmt: skip


def test_a_new_plan_records_its_first_booking_caused_by_the_screening() -> None:
    plan, cause = opened()
    [booked] = recorded(plan)
    assert isinstance(booked.data, SessionScheduled)
    assert (booked.causation_id, booked.correlation_id) == (cause, cause)
    assert plan.sessions[0].last_event_id == booked.event_id
    assert plan.collect() == [], "collecting empties the recordings"


def test_completing_records_the_completion_then_books_the_next_session() -> None:
    plan, _ = opened()
    recorded(plan)
    first = plan.sessions[0]
    upcoming = session(2, NOW + timedelta(days=40))
    plan.complete(first, completion(NOW), timezone="Europe/Paris",
                  earliest=date(2031, 4, 2), upcoming=upcoming)  # fmt: skip
    done, booked = recorded(plan)
    assert isinstance(done.data, SessionCompleted)
    assert isinstance(booked.data, SessionScheduled)
    assert booked.causation_id == done.event_id, "the next booking is caused by the completion"
    assert first.status is SessionStatus.COMPLETED
    with pytest.raises(Conflict, match="already completed"):
        plan.scheduled(first.session_id)
    assert not plan.finished


def test_the_last_session_closes_the_plan_and_cancelling_everything_finishes_it() -> None:
    plan, _ = opened()
    plan.complete(plan.sessions[0], completion(NOW), timezone="UTC", earliest=None, upcoming=None)
    assert (plan.status, plan.finished) == (PlanStatus.COMPLETED, True)

    other, _ = opened()
    other.erase()
    [*_, cancelled] = recorded(other)
    assert isinstance(cancelled.data, SessionCancelled)
    assert cancelled.data.reason == "client_erased"
    assert other.finished


def day_one() -> Step:
    """A day-1 step due at `NOW`, still scheduled."""
    return Step(aftercare_id=str(uuid.uuid4()), client_id="c-1", site_id="paris-01",
                plan_id=str(uuid.uuid4()), session_id=str(uuid.uuid4()),
                step=AftercareStep.DAY_1, due_at=NOW, locale=Locale.FR, title="J+1",
                instructions=["x"], correlation_id=str(uuid.uuid4()),
                cause_id=str(uuid.uuid4()), created_at=NOW)  # fmt: skip


def test_a_step_falls_due_once_and_settles_from_its_deliveries() -> None:
    step = day_one()
    assert not step.release(NOW - timedelta(seconds=1)), "not before its time"
    assert step.release(NOW)
    assert not step.release(NOW), "released once"
    [due] = recorded(step)
    assert isinstance(due.data, AftercareDue)
    assert step.event_id == str(due.event_id)
    step.cancel()
    assert step.status is StepStatus.DUE, "a step that went out cannot be cancelled"
    step.settle({DeliveryStatus.DELIVERED, DeliveryStatus.PENDING})
    assert not step.finished, "one channel is still trying"
    step.settle({DeliveryStatus.DELIVERED, DeliveryStatus.CANCELLED})
    assert (step.status, step.finished) == (StepStatus.DELIVERED, True)


def test_a_step_fails_when_one_channel_gave_up_and_is_cancelled_when_none_applied() -> None:
    def due() -> Step:
        step = day_one()
        step.release(NOW)
        return step

    failed = due()
    failed.settle({DeliveryStatus.DELIVERED, DeliveryStatus.FAILED})
    assert failed.status is StepStatus.FAILED, "the email that bounced needs a follow-up"
    failed.settle({DeliveryStatus.DELIVERED})
    assert failed.status is StepStatus.FAILED, "a settled step stays settled"
    cancelled = due()
    cancelled.settle({DeliveryStatus.CANCELLED})
    assert cancelled.status is StepStatus.CANCELLED


def test_a_delivery_backs_off_then_fails_after_its_attempts() -> None:
    delivery = Delivery(delivery_id="e:log", kind="client", channel="log", event_id="e",
                        next_attempt_at=NOW, created_at=NOW)  # fmt: skip
    schedule = RetrySchedule.doubling(timedelta(seconds=2), 3)
    for n in range(2):
        delivery.attempted(NOW, error="timeout", permanent=False, schedule=schedule)
        assert delivery.status is DeliveryStatus.PENDING
        assert delivery.next_attempt_at == NOW + timedelta(seconds=2 * 2**n)
    delivery.attempted(NOW, error="timeout", permanent=False, schedule=schedule)
    assert (delivery.status, delivery.finished, len(delivery.attempts)) == (
        DeliveryStatus.FAILED, True, 3)  # fmt: skip


def test_webhook_retries_outlast_a_day_whatever_the_jitter() -> None:
    delays = [WEBHOOK_RETRIES.after(n, spread) for n in range(1, 9) for spread in (-1, 1)]
    assert delays[-2:] == [None, None], "eight attempts in all"
    assert WEBHOOK_RETRIES.span >= timedelta(hours=24)
    earliest = sum((d for d in delays[0:14:2] if d is not None), timedelta())
    assert earliest >= timedelta(hours=24)
    assert WEBHOOK_RETRIES.after(3, 1) != WEBHOOK_RETRIES.after(3, -1), "retries are spread"


def test_a_recovered_delivery_gets_a_fresh_schedule() -> None:
    delivery = Delivery(delivery_id="e:w", kind="webhook", channel="webhook", event_id="e",
                        next_attempt_at=NOW, created_at=NOW)  # fmt: skip
    schedule = RetrySchedule.of_seconds([1])
    delivery.attempted(NOW, error="503", permanent=False, schedule=schedule)
    delivery.attempted(NOW, error="503", permanent=False, schedule=schedule)
    assert delivery.finished
    later = NOW + timedelta(days=2)
    assert delivery.reopen(later)
    assert (delivery.status, delivery.next_attempt_at) == (DeliveryStatus.PENDING, later)
    delivery.attempted(later, error="503", permanent=False, schedule=schedule)
    assert not delivery.finished, "two tries again, not none"
    delivery.attempted(later, error=None, permanent=False, schedule=schedule)
    assert delivery.status.value == "delivered"
    assert not delivery.reopen(later), "only a failed delivery is queued again"


def test_a_webhook_failing_for_five_days_is_disabled_and_recovers() -> None:
    webhook = Webhook(webhook_id="w", url="https://x.example/h", events=["clinic.x"], owner="o",
                      sites=["*"], created_at=NOW,
                      secrets=[SigningSecret(sealed="s1", created_at=NOW)])  # fmt: skip
    assert webhook.failed(NOW), "failing from now"
    assert not webhook.failed(NOW + timedelta(days=4, hours=23))
    assert webhook.status == "active"
    assert webhook.delivered(), "one delivery got through: the count starts again"
    webhook.failed(NOW + timedelta(days=5))
    assert not webhook.failed(NOW + timedelta(days=9, hours=23))
    assert webhook.failed(NOW + timedelta(days=10))
    assert webhook.status == "disabled"
    assert webhook.disabled_reason
    webhook.recover()
    assert (webhook.status, webhook.failing_since) == ("active", None)


def test_a_rotated_secret_signs_beside_the_new_one_for_a_day() -> None:
    webhook = Webhook(webhook_id="w", url="https://x.example/h", events=["clinic.x"], owner="o",
                      sites=["*"], created_at=NOW,
                      secrets=[SigningSecret(sealed="s1", created_at=NOW)])  # fmt: skip
    assert webhook.signing(NOW) == ["s1"]
    webhook.rotate("s2", NOW)
    assert webhook.signing(NOW + timedelta(hours=23)) == ["s1", "s2"]
    assert webhook.signing(NOW + timedelta(hours=24)) == ["s2"]
    webhook.rotate("s3", NOW + timedelta(hours=25))
    assert [s.sealed for s in webhook.secrets] == ["s2", "s3"], "expired secrets are dropped"


def test_secrets_must_be_standard_webhooks_secrets() -> None:
    assert secret_problem("whsec_" + base64.b64encode(b"k" * 24).decode()) is None
    assert secret_problem("whsec_" + base64.b64encode(b"k" * 23).decode())
    assert secret_problem("integrator-secret-0123456789")
    assert secret_problem("whsec_not base64!")


def test_a_room_day_gives_a_room_to_one_session_at_a_time() -> None:
    day = RoomDay(day_id="paris-01|2031-03-04", site_id="paris-01", day=date(2031, 3, 4))
    at = datetime(2031, 3, 4, 9, tzinfo=UTC)
    slot = Slot(room=1, starts_at=at + timedelta(hours=1), ends_at=at + timedelta(hours=2),
                numbing_starts_at=at)  # fmt: skip
    first, second = uuid.uuid4(), uuid.uuid4()
    assert day.take(slot, first, "t1")
    assert not day.take(slot, second, "t2"), "numbing time included, the room is taken"
    later = Slot(room=1, starts_at=at + timedelta(hours=2), ends_at=at + timedelta(hours=3),
                 numbing_starts_at=None)  # fmt: skip
    assert day.take(later, second, "t2"), "back to back does not overlap"
    assert day.take(later, first, "t3") is False
    moved = Slot(room=2, starts_at=at, ends_at=at + timedelta(hours=1), numbing_starts_at=None)
    assert day.take(moved, first, "t4")
    held = {(b.session_id, b.room) for b in day.blocks}
    assert held == {(first, 1), (first, 2), (second, 1)}, "the old time stays until recorded"
    day.give_back(first, keep="t4")
    assert {(b.session_id, b.room) for b in day.blocks} == {(first, 2), (second, 1)}
    day.give_back(first, from_=at + timedelta(minutes=30))
    [kept] = [b for b in day.blocks if b.session_id == first]
    assert kept.ends_at == at + timedelta(minutes=30), "completed early: the rest is free"
