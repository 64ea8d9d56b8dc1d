"""How fast the pure rules and the event envelope run (no I/O): calls per second, per call."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date

from services.intake.domain.policy import DEFAULT_POLICY, screen
from services.intake.domain.questionnaire import HealthAnswers, Questionnaire
from shared.envelope import build, parse
from shared.events import EventKind
from shared.examples import EXAMPLES

QUESTIONNAIRE = Questionnaire.model_validate(
    {
        "treatment": {"areas": ["face"], "concerns": ["acne_scars"], "severity": "severe"},
        "skin": {"sensitivity": "normal"},
        "health": dict.fromkeys(HealthAnswers.model_fields, False) | {"active_acne": True},
    }
)
RECORD = build(EXAMPLES[EventKind.SESSION_COMPLETED], source="scheduler", prefix="clinic.")


def measure(name: str, call: Callable[[], object], seconds: float = 1.0) -> None:
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            call()
        count += 100
    print(f"{name:32} {count / elapsed:12,.0f} calls/s  {elapsed / count * 1e6:8.1f} µs/call")


def main() -> None:
    measure(
        "intake.screen (default policy)",
        lambda: screen(QUESTIONNAIRE, DEFAULT_POLICY, today=date(2026, 3, 2)),
    )
    measure(
        "envelope.build session_completed",
        lambda: build(EXAMPLES[EventKind.SESSION_COMPLETED], source="scheduler", prefix="clinic."),
    )
    measure(
        "envelope.parse session_completed", lambda: parse(RECORD.value or b"", prefix="clinic.")
    )


if __name__ == "__main__":
    main()
