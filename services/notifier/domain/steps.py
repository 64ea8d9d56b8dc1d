"""A client's aftercare step and its deliveries: small state machines that record what they do.

A step waits (`scheduled`) until its time, falls `due` (recording `aftercare_due`), and ends
once none of its channels is still trying: `delivered` when every channel that can reach the
client delivered it, `failed` when one gave up, or `cancelled`. A delivery is one channel's (or
one webhook's) attempts at one event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import Field

from services.notifier.domain.timeline import PlannedStep
from shared.aggregate import Aggregate
from shared.events import AftercareDue
from shared.vocabulary import AftercareStep, Locale


class StepStatus(StrEnum):
    SCHEDULED = "scheduled"
    DUE = "due"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class RetrySchedule:
    """How long a delivery waits after each failed attempt, until the delays run out.

    `jitter` spreads each delay by up to that share either way, so receivers that failed
    together are not all retried in the same second."""

    delays: tuple[timedelta, ...]
    jitter: float = 0.0

    @classmethod
    def of_seconds(cls, delays: Sequence[float], jitter: float = 0.0) -> RetrySchedule:
        return cls(tuple(timedelta(seconds=d) for d in delays), jitter)

    @classmethod
    def doubling(cls, first: timedelta, attempts: int) -> RetrySchedule:
        return cls(tuple(first * 2**n for n in range(attempts - 1)))

    def after(self, failures: int, spread: float) -> timedelta | None:
        """The wait after the `failures`-th failure in a row (None: give up); `spread` in
        [-1, 1] picks where in the jitter band it falls."""
        if failures > len(self.delays):
            return None
        return self.delays[failures - 1] * (1 + self.jitter * max(-1.0, min(1.0, spread)))

    @property
    def span(self) -> timedelta:
        """The least time from the first attempt to the last, whatever the jitter."""
        return sum(self.delays, timedelta()) * (1 - self.jitter)


CLIENT_RETRIES = RetrySchedule.doubling(timedelta(seconds=2), 8)
"""A client channel: eight attempts, two seconds doubling (settings change both)."""
WEBHOOK_RETRIES = RetrySchedule.of_seconds(
    (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600), jitter=0.1
)
"""Svix's schedule: eight attempts over about 27 hours, never under 24 with the jitter, so a
receiver down for a day's maintenance still gets every event (SPEC section 7)."""


class Step(Aggregate):
    aftercare_id: str
    client_id: str
    site_id: str
    plan_id: str
    session_id: str
    step: AftercareStep
    due_at: datetime
    status: StepStatus = StepStatus.SCHEDULED
    locale: Locale
    title: str
    instructions: list[str]
    correlation_id: str
    cause_id: str
    event_id: str | None = None
    released_at: datetime | None = None
    created_at: datetime
    traceparent: str | None = Field(
        default=None, description="The trace it was planned in; its release continues it."
    )

    @property
    def finished(self) -> bool:
        return self.status in (StepStatus.DELIVERED, StepStatus.FAILED, StepStatus.CANCELLED)

    def release(self, now: datetime) -> bool:
        """Fall due when its time has come: record `aftercare_due` (once)."""
        if self.status is not StepStatus.SCHEDULED or self.due_at > now:
            return False
        event = AftercareDue(
            aftercare_id=UUID(self.aftercare_id),
            client_id=self.client_id,
            site_id=self.site_id,
            session_id=UUID(self.session_id),
            step=self.step,
            due_at=self.due_at,
            locale=self.locale,
            title=self.title,
            instructions=self.instructions,
        )
        self.event_id = str(
            self.record(event, correlation=UUID(self.correlation_id), cause=UUID(self.cause_id))
        )
        self.status = StepStatus.DUE
        self.released_at = now
        return True

    def move(self, planned: PlannedStep) -> None:
        """A rescheduled session moves its reminder, unless it went out already."""
        if self.status is StepStatus.SCHEDULED:
            self.due_at = planned.due_at
            self.title = planned.title
            self.instructions = list(planned.instructions)

    def cancel(self) -> None:
        if self.status is StepStatus.SCHEDULED:
            self.status = StepStatus.CANCELLED

    def settle(self, outcomes: set[DeliveryStatus]) -> None:
        """End from the outcomes of the client's deliveries, once none is pending. A channel
        that gave up fails the step even if another got through: the clinic must follow up.
        Cancelled deliveries (no address for that channel, or the client erased) count as
        neither."""
        if self.status is not StepStatus.DUE or not outcomes or DeliveryStatus.PENDING in outcomes:
            return
        if DeliveryStatus.FAILED in outcomes:
            self.status = StepStatus.FAILED
        elif DeliveryStatus.DELIVERED in outcomes:
            self.status = StepStatus.DELIVERED
        else:
            self.status = StepStatus.CANCELLED


class Delivery(Aggregate):
    delivery_id: str
    kind: str = Field(description="`client` (a channel to the client) or `webhook`")
    channel: str
    event_id: str
    aftercare_id: str | None = None
    client_id: str | None = None
    webhook_id: str | None = None
    event_type: str | None = None
    body: str | None = None
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    retries_from: int = Field(
        default=0, description="Attempts made before its last recovery: the schedule restarts."
    )
    next_attempt_at: datetime
    created_at: datetime
    traceparent: str | None = Field(
        default=None, description="The trace of the event it delivers; each attempt joins it."
    )

    @property
    def finished(self) -> bool:
        return self.status is not DeliveryStatus.PENDING

    def attempted(
        self,
        at: datetime,
        *,
        error: str | None,
        permanent: bool,
        schedule: RetrySchedule,
        spread: float = 0.0,
    ) -> None:
        """Record one attempt; retry on `schedule` until its delays run out."""
        self.attempts.append({"at": at, "ok": error is None} | ({"error": error} if error else {}))
        if error is None:
            self.status = DeliveryStatus.DELIVERED
            return
        delay = (
            None if permanent else schedule.after(len(self.attempts) - self.retries_from, spread)
        )
        if delay is None:
            self.status = DeliveryStatus.FAILED
        else:
            self.next_attempt_at = at + delay

    def reopen(self, at: datetime) -> bool:
        """A failed delivery is tried again from `at`, on a fresh schedule (a recovery)."""
        if self.status is not DeliveryStatus.FAILED:
            return False
        self.status = DeliveryStatus.PENDING
        self.next_attempt_at = at
        self.retries_from = len(self.attempts)
        return True

    def cancel(self, at: datetime | None = None, why: str | None = None) -> None:
        """Nothing more is sent; `why` is recorded as the attempt that found out."""
        if self.status is DeliveryStatus.PENDING:
            if at is not None and why is not None:
                self.attempts.append({"at": at, "ok": False, "error": why})
            self.status = DeliveryStatus.CANCELLED
