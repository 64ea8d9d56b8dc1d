"""Event models accept what the contract names and refuse everything else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from shared.events import (
    EVENT_MODELS,
    EventKind,
    ScreeningPassed,
    SessionScheduled,
    SiteUpdated,
)
from shared.examples import EXAMPLES


def example(kind: EventKind) -> dict[str, Any]:
    payload: dict[str, Any] = EXAMPLES[kind].model_dump(mode="json")
    return payload


@pytest.mark.parametrize("kind", list(EventKind))
def test_every_example_round_trips_through_json(kind: EventKind) -> None:
    model = EVENT_MODELS[kind]
    payload = example(kind)
    assert model.model_validate_json(json.dumps(payload)) == EXAMPLES[kind]


@pytest.mark.parametrize("kind", list(EventKind))
def test_unknown_fields_are_read_as_if_absent_and_never_published(kind: EventKind) -> None:
    """A tolerant reader (SPEC section 8); and a field the contract does not name, a health
    answer least of all, cannot ride along into a published event."""
    read = EVENT_MODELS[kind].model_validate({**example(kind), "pregnant": True})
    assert read == EXAMPLES[kind]
    assert "pregnant" not in read.model_dump()


@pytest.mark.parametrize("kind", list(EventKind))
def test_every_field_of_the_spec_is_required(kind: EventKind) -> None:
    optional = {"numbing_starts_at"}
    for field in example(kind):
        if field in optional:
            continue
        payload = example(kind)
        del payload[field]
        with pytest.raises(ValidationError, match=field):
            EVENT_MODELS[kind].model_validate(payload)


def test_naive_datetimes_are_refused() -> None:
    payload = {**example(EventKind.SCREENING_PASSED), "screened_at": "2026-03-02T09:15:00"}
    with pytest.raises(ValidationError, match="timezone"):
        ScreeningPassed.model_validate(payload)


def test_datetimes_are_normalised_to_utc() -> None:
    payload = {**example(EventKind.SCREENING_PASSED), "screened_at": "2026-03-02T10:15:00+01:00"}
    passed = ScreeningPassed.model_validate(payload)
    assert passed.screened_at.isoformat() == "2026-03-02T09:15:00+00:00"
    assert passed.model_dump(mode="json")["screened_at"] == "2026-03-02T09:15:00Z"


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        (EventKind.SCREENING_PASSED, "areas", ["elbow"]),
        (EventKind.SCREENING_PASSED, "areas", []),
        (EventKind.SCREENING_PASSED, "severity", "extreme"),
        (EventKind.SCREENING_PASSED, "screening_id", "not-a-uuid"),
        (EventKind.SCREENING_PASSED, "site_id", "Paris 01"),
        (EventKind.SCREENING_FAILED, "outcome", "passed"),
        (EventKind.SCREENING_FAILED, "reasons", []),
        (EventKind.SCREENING_FAILED, "reasons", ["not a code"]),
        (EventKind.SESSION_SCHEDULED, "sequence", 0),
        (EventKind.SESSION_SCHEDULED, "needle_depth_mm", 0),
        (EventKind.SESSION_SCHEDULED, "needle_depth_mm", 3.5),
        (EventKind.SESSION_COMPLETED, "timezone", "Mars/Olympus_Mons"),
        (EventKind.SESSION_COMPLETED, "bleeding", "sometimes"),
        (EventKind.AFTERCARE_DUE, "step", "day_2"),
        (EventKind.AFTERCARE_DUE, "locale", "de"),
        (EventKind.AFTERCARE_DUE, "instructions", []),
        (EventKind.SITE_UPDATED, "rooms", 0),
        (EventKind.SITE_UPDATED, "opening_hours", {"mon": ["9h", "18h"]}),
        (EventKind.SITE_UPDATED, "opening_hours", {"funday": ["09:00", "18:00"]}),
        (EventKind.CLIENT_CONTACT, "email", "not-an-email"),
        (EventKind.CLIENT_CONTACT, "phone", "0600000000"),
    ],
)
def test_bad_values_are_refused(kind: EventKind, field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        EVENT_MODELS[kind].model_validate({**example(kind), field: value})


def test_a_session_cannot_end_before_it_starts() -> None:
    payload = {**example(EventKind.SESSION_SCHEDULED), "ends_at": "2026-03-04T08:30:00Z"}
    with pytest.raises(ValidationError, match="ends_at must be after starts_at"):
        SessionScheduled.model_validate(payload)


def test_sequence_cannot_exceed_the_plan() -> None:
    payload = {**example(EventKind.SESSION_SCHEDULED), "sequence": 7}
    with pytest.raises(ValidationError, match="sequence cannot exceed total_sessions"):
        SessionScheduled.model_validate(payload)


def test_numbing_is_optional_and_must_precede_the_slot() -> None:
    payload = example(EventKind.SESSION_SCHEDULED)
    del payload["numbing_starts_at"]
    assert SessionScheduled.model_validate(payload).numbing_starts_at is None
    payload["numbing_starts_at"] = "2026-03-04T09:30:00Z"
    with pytest.raises(ValidationError, match="numbing_starts_at must be before starts_at"):
        SessionScheduled.model_validate(payload)


def test_a_site_must_open_before_it_closes() -> None:
    payload = {**example(EventKind.SITE_UPDATED), "opening_hours": {"mon": ["18:00", "09:00"]}}
    with pytest.raises(ValidationError, match=r"opening_hours\.mon"):
        SiteUpdated.model_validate(payload)


def test_failed_screening_may_have_no_recheck_date() -> None:
    payload = {**example(EventKind.SCREENING_FAILED), "recheck_after": None}
    assert EVENT_MODELS[EventKind.SCREENING_FAILED].model_validate(payload)


def test_contact_without_phone_or_email_is_allowed_but_explicit() -> None:
    payload = {**example(EventKind.CLIENT_CONTACT), "phone": None, "email": None}
    assert EVENT_MODELS[EventKind.CLIENT_CONTACT].model_validate(payload)
