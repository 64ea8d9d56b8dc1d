"""The words of the public contract (SPEC sections 2-5), shared by events, APIs and rules.

Pure data: enumerations and constrained types with no I/O, so services' `domain/` packages may
import them as they import pydantic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints


class Area(StrEnum):
    FACE = "face"
    NECK = "neck"
    DECOLLETE = "decollete"
    HANDS = "hands"
    BODY = "body"
    SCALP = "scalp"


class Concern(StrEnum):
    FINE_LINES = "fine_lines"
    WRINKLES = "wrinkles"
    ACNE_SCARS = "acne_scars"
    HYPERPIGMENTATION = "hyperpigmentation"
    ENLARGED_PORES = "enlarged_pores"
    STRETCH_MARKS = "stretch_marks"
    DULL_COMPLEXION = "dull_complexion"
    SAGGING_SKIN = "sagging_skin"
    TEXTURE = "texture"
    HAIR_LOSS = "hair_loss"


class Severity(StrEnum):
    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"


class SkinSensitivity(StrEnum):
    NORMAL = "normal"
    SENSITIVE = "sensitive"
    VERY_SENSITIVE = "very_sensitive"


class Locale(StrEnum):
    EN = "en"
    FR = "fr"


class ScreeningOutcome(StrEnum):
    PASSED = "passed"
    DEFERRED = "deferred"
    DECLINED = "declined"


class AftercareStep(StrEnum):
    """The aftercare steps of SPEC section 5; `maintenance` follows a one-session plan."""

    IMMEDIATE = "immediate"
    DAY_1 = "day_1"
    DAY_3 = "day_3"
    DAY_7 = "day_7"
    DAY_15 = "day_15"
    NEXT_SESSION = "next_session"
    TOUCH_UP = "touch_up"
    MAINTENANCE = "maintenance"


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00+01:00 falls before year 1 in UTC
        raise ValueError("this instant is out of range once in UTC") from exc


def _known_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA timezone {value!r}") from exc
    return value


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_in_utc)]
"""A timezone-aware instant, normalised to UTC (naive datetimes are refused)."""

SiteId = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$"), Field(examples=["paris-01"])
]
ClientId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"),
    Field(examples=["c-4f1d2a"]),
]
ReasonCode = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,63}$")]
IanaTimezone = Annotated[str, AfterValidator(_known_timezone), Field(examples=["Europe/Paris"])]
ClockTime = Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")]
NeedleDepthMm = Annotated[float, Field(gt=0, le=3.0, examples=[1.0])]
