"""When a plan is stalled: it still owes its client a session and none is booked inside the
window that session belongs in (SPEC section 9, `clinicflow stalled`).

The window opens on the plan's first day for its first session, and on the first day the
spacing rules allow after the latest completed one (`next_session_earliest`, what a reschedule
enforces); it closes a booking horizon later, the farthest the scheduler would ever book. A plan
whose next session was cancelled waits for nobody: nothing in the workflow books it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from services.scheduler.domain.model import Plan, SessionStatus, next_session_earliest


@dataclass(frozen=True)
class Stall:
    next_sequence: int
    window_opens: date
    window_closes: date
    booked_at: datetime | None
    reason: Literal["not_booked", "outside_window"]


def stall(plan: Plan, timezone: str, *, horizon: timedelta, min_interval_days: int) -> Stall | None:
    """Why `plan` is stalled, or None while its next session is booked in time (or none is owed)."""
    completed = [s for s in plan.sessions if s.status is SessionStatus.COMPLETED]
    if plan.finished or len(completed) >= plan.spec.total_sessions:
        return None
    zone = ZoneInfo(timezone)
    opens: date | None = plan.created_at.astimezone(zone).date()
    if completed:
        last = max(completed, key=lambda s: s.sequence)
        done = last.completion.completed_at if last.completion else last.starts_at
        opens = next_session_earliest(
            done, plan.spec, timezone, min_interval_days=min_interval_days
        )
    if opens is None:
        return None
    closes = opens + timedelta(days=horizon.days)
    booked = next((s for s in plan.sessions if s.status is SessionStatus.SCHEDULED), None)
    if booked is None:
        return Stall(len(completed) + 1, opens, closes, None, "not_booked")
    if opens <= booked.starts_at.astimezone(zone).date() <= closes:
        return None
    return Stall(len(completed) + 1, opens, closes, booked.starts_at, "outside_window")
