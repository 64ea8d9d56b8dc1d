"""One realistic example of each event's data: shown to integrators and checked by the tests."""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import UUID

from shared.events import (
    AftercareDue,
    ClientContact,
    EventData,
    EventKind,
    ScreeningFailed,
    ScreeningPassed,
    SessionCancelled,
    SessionCompleted,
    SessionScheduled,
    SiteUpdated,
)
from shared.vocabulary import (
    AftercareStep,
    Area,
    Concern,
    Locale,
    Severity,
    SkinSensitivity,
    Weekday,
)

SCREENING_ID = UUID("5b2f7c1e-3a44-4b8e-9a8b-2f0d6c1e9a01")
PLAN_ID = UUID("0c6f3f5e-8d51-4c8a-a0c2-7f4b5e2d1c02")
SESSION_ID = UUID("9a1d2b3c-4e5f-4a6b-8c7d-0e1f2a3b4c03")
CLIENT_ID = "c-8f14e45f"
SITE_ID = "paris-01"

EXAMPLES: dict[EventKind, EventData] = {
    EventKind.SCREENING_PASSED: ScreeningPassed(
        screening_id=SCREENING_ID,
        client_id=CLIENT_ID,
        site_id=SITE_ID,
        areas=[Area.FACE],
        concerns=[Concern.ACNE_SCARS],
        severity=Severity.SEVERE,
        skin_sensitivity=SkinSensitivity.NORMAL,
        policy_version="default-2026.1",
        screened_at=datetime(2026, 3, 2, 9, 15, tzinfo=UTC),
        valid_until=datetime(2026, 5, 31, 9, 15, tzinfo=UTC),
    ),
    EventKind.SCREENING_FAILED: ScreeningFailed(
        screening_id=SCREENING_ID,
        client_id=CLIENT_ID,
        site_id=SITE_ID,
        outcome="deferred",
        reasons=["ACTIVE_ACNE", "ANTI_INFLAMMATORIES"],
        recheck_after=date(2026, 4, 1),
        policy_version="default-2026.1",
        screened_at=datetime(2026, 3, 2, 9, 15, tzinfo=UTC),
    ),
    EventKind.SESSION_SCHEDULED: SessionScheduled(
        session_id=SESSION_ID,
        plan_id=PLAN_ID,
        client_id=CLIENT_ID,
        site_id=SITE_ID,
        sequence=1,
        total_sessions=6,
        starts_at=datetime(2026, 3, 4, 9, 0, tzinfo=UTC),
        ends_at=datetime(2026, 3, 4, 10, 0, tzinfo=UTC),
        numbing_starts_at=datetime(2026, 3, 4, 8, 0, tzinfo=UTC),
        needle_depth_mm=1.5,
    ),
    EventKind.SESSION_CANCELLED: SessionCancelled(
        session_id=SESSION_ID,
        plan_id=PLAN_ID,
        client_id=CLIENT_ID,
        site_id=SITE_ID,
        reason="client asked to cancel",
    ),
    EventKind.SESSION_COMPLETED: SessionCompleted(
        session_id=SESSION_ID,
        plan_id=PLAN_ID,
        client_id=CLIENT_ID,
        site_id=SITE_ID,
        timezone="Europe/Paris",
        sequence=1,
        total_sessions=6,
        completed_at=datetime(2026, 3, 4, 10, 0, tzinfo=UTC),
        needle_depth_mm=1.5,
        areas=[Area.FACE],
        anesthetic_used=True,
        bleeding=True,
        next_session_earliest=date(2026, 4, 3),
    ),
    EventKind.AFTERCARE_DUE: AftercareDue(
        aftercare_id=UUID("3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a604"),
        client_id=CLIENT_ID,
        site_id=SITE_ID,
        session_id=SESSION_ID,
        step=AftercareStep.DAY_1,
        due_at=datetime(2026, 3, 5, 10, 0, tzinfo=UTC),
        locale=Locale.EN,
        title="Day 1: keep it clean and calm",
        instructions=["Wash the treated area gently and apply moisturiser once or twice."],
    ),
    EventKind.SITE_UPDATED: SiteUpdated(
        site_id=SITE_ID,
        name="Paris Opéra",
        timezone="Europe/Paris",
        opening_hours={Weekday.MON: ["09:00", "19:00"], Weekday.SAT: ["10:00", "17:00"]},
        rooms=3,
    ),
    EventKind.CLIENT_CONTACT: ClientContact(
        client_id=CLIENT_ID,
        site_id=SITE_ID,
        full_name="Ana Silva",
        email="ana@example.org",
        phone="+33600000000",
        locale=Locale.FR,
    ),
}
