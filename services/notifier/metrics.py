"""How late the notifier's aftercare runs: the timer's lag and the steps left overdue.

A delivered step leaves the live `aftercare_steps` collection, so what is still there with a
due time well past is aftercare a client should have had and has not: the timer is stuck
(`scheduled`) or every delivery attempt is still failing (`due`). Counting it is cheap: the
collection holds only live steps and `(status, due_at)` is indexed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from prometheus_client import Gauge, Histogram

from services.notifier.domain.steps import StepStatus

if TYPE_CHECKING:
    from services.notifier.handlers import NotifierContext  # the handlers observe TIMER_LAG

OVERDUE_AFTER = timedelta(minutes=5)
OVERDUE_SECONDS = 30.0
"""How often the overdue steps are counted."""

TIMER_LAG = Histogram(
    "clinicflow_aftercare_timer_lag_seconds",
    "Time from a step's due time to its release by the timer.",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
AFTERCARE_OVERDUE = Gauge(
    "clinicflow_aftercare_overdue_steps",
    "Aftercare steps due more than 5 minutes ago and not delivered yet.",
)


async def count_overdue(ctx: NotifierContext) -> int:
    """Set `AFTERCARE_OVERDUE`; 0, as a `periodic` step with no backlog of its own."""
    pending = [StepStatus.SCHEDULED.value, StepStatus.DUE.value]
    overdue = {"status": {"$in": pending}, "due_at": {"$lte": ctx.clock() - OVERDUE_AFTER}}
    AFTERCARE_OVERDUE.set(await ctx.store.steps.count_documents(overdue))
    return 0
