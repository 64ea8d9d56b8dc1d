"""How fast the pure rules and the event envelope run (no I/O): calls per second, per call.

Target: each rule well under the few milliseconds a MongoDB round trip costs, so handlers are
bound by I/O; slot finding is measured on a busy site (2,000 booked quarter hours, 3 rooms).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from services.intake.domain.policy import DEFAULT_POLICY, screen
from services.intake.domain.questionnaire import HealthAnswers, Questionnaire
from services.notifier.domain.timeline import after_session
from services.scheduler.domain.plans import DEFAULT_RULES, PlanInput, plan_for
from services.scheduler.domain.slots import Busy, SiteHours, find_slot
from shared.envelope import build, parse
from shared.events import EventKind, SessionCompleted
from shared.examples import EXAMPLES
from shared.vocabulary import Area, Concern, Locale, Severity, SkinSensitivity

QUESTIONNAIRE = Questionnaire.model_validate(
    {
        "treatment": {"areas": ["face"], "concerns": ["acne_scars"], "severity": "severe"},
        "skin": {"sensitivity": "normal"},
        "health": dict.fromkeys(HealthAnswers.model_fields, False) | {"active_acne": True},
    }
)
RECORD = build(EXAMPLES[EventKind.SESSION_COMPLETED], source="scheduler", prefix="clinic.")
PARIS = SiteHours(
    timezone="Europe/Paris",
    opening_hours={day: ["09:00", "19:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
    rooms=3,
)
MONDAY = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
BUSY = [
    Busy(room=1 + i % 3, starts_at=start, ends_at=start + timedelta(minutes=15))
    for i in range(2000)
    for start in [MONDAY + timedelta(days=i // 120, minutes=15 * (i % 40))]
]
PLAN_INPUT = PlanInput(
    areas=[Area.FACE],
    concerns=[Concern.ACNE_SCARS],
    severity=Severity.SEVERE,
    skin_sensitivity=SkinSensitivity.NORMAL,
)


def measure(name: str, call: Callable[[], object], seconds: float = 1.0) -> float:
    """Print and return how many calls per second `call` runs."""
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            call()
        count += 100
    print(f"{name:32} {count / elapsed:12,.0f} calls/s  {elapsed / count * 1e6:8.1f} µs/call")
    return count / elapsed


def main() -> dict[str, float]:
    """Calls per second of each rule, by name (also printed)."""
    figures = {}
    figures["intake.screen"] = measure(
        "intake.screen (default policy)",
        lambda: screen(QUESTIONNAIRE, DEFAULT_POLICY, today=date(2026, 3, 2)),
    )
    figures["envelope.build"] = measure(
        "envelope.build session_completed",
        lambda: build(EXAMPLES[EventKind.SESSION_COMPLETED], source="scheduler", prefix="clinic."),
    )
    figures["envelope.parse"] = measure(
        "envelope.parse session_completed", lambda: parse(RECORD.value or b"", prefix="clinic.")
    )
    figures["scheduler.plan_for"] = measure(
        "scheduler.plan_for", lambda: plan_for(PLAN_INPUT, DEFAULT_RULES)
    )
    figures["scheduler.find_slot"] = measure(
        "scheduler.find_slot (2000 busy)",
        lambda: find_slot(PARIS, BUSY, not_before=MONDAY, numbing_minutes=60),
    )
    completed = EXAMPLES[EventKind.SESSION_COMPLETED]
    assert isinstance(completed, SessionCompleted)
    figures["notifier.after_session"] = measure(
        "notifier.after_session", lambda: after_session(completed, Locale.FR)
    )
    return figures


if __name__ == "__main__":
    main()
