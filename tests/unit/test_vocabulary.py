"""The shared field types refuse what they cannot represent with a validation error (a 4xx),
never an exception that would answer 500."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from shared.vocabulary import UtcDatetime

INSTANT: TypeAdapter[datetime] = TypeAdapter(UtcDatetime)


def test_an_instant_is_normalised_to_utc() -> None:
    assert INSTANT.validate_python("2026-03-04T11:00:00+01:00") == datetime(
        2026, 3, 4, 10, 0, tzinfo=UTC
    )


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01"])
def test_an_instant_outside_the_calendar_in_utc_is_invalid(value: str) -> None:
    with pytest.raises(ValidationError, match="out of range once in UTC"):
        INSTANT.validate_python(value)
