"""Treatment plans: how many sessions, how far apart, how deep, and whether to numb first.

The rules are data. `DEFAULT_RULES` below is SPEC section 4's table plus a needle-depth table
(typical professional microneedling ranges); a clinic chain may supply its own `PlanRules` (same
shape, YAML or JSON), and `version` records which table built each plan. `plan_for` is the whole
rule: pure, synchronous, no I/O.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.vocabulary import Area, Concern, Severity, SkinSensitivity

SPEC_MIN_INTERVAL_DAYS = 15
"""SPEC: never less than 15 days between two sessions of a client. A table may ask for more."""

MAX_NEEDLE_DEPTH_MM = 3.0
DEPTH_STEP_MM = 0.25
"""Pens are set in quarter millimetres: a depth is rounded down to one (0.25 mm at least)."""


class PlanInput(BaseModel):
    """What a passed screening tells the scheduler about the treatment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    areas: list[Area] = Field(min_length=1)
    concerns: list[Concern] = Field(min_length=1)
    severity: Severity
    skin_sensitivity: SkinSensitivity


class PlanSpec(BaseModel):
    """The plan a client gets: the scheduler books `total_sessions` sessions from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    total_sessions: int = Field(ge=1)
    interval_days: int | None = Field(description="Days between two sessions; null for one")
    needle_depth_mm: float = Field(gt=0, le=MAX_NEEDLE_DEPTH_MM)
    numbing: bool = Field(description="Numbing gel applied before the session (deep needling)")
    maintenance_after_days: int | None = Field(
        description="One-session plans only: days until the maintenance reminder"
    )


class SeverityRule(BaseModel):
    """One row of the SPEC table: the sessions a severity needs, and their spacing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    severity: Severity
    sessions: int = Field(ge=1)
    interval_days: int | None = Field(default=None, ge=1)
    sensitive_interval_days: int | None = Field(
        default=None, ge=1, description="Spacing for sensitive or very sensitive skin; null = same"
    )
    maintenance_after_days: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> SeverityRule:
        if self.sessions == 1:
            if self.interval_days is not None or self.sensitive_interval_days is not None:
                raise ValueError(f"{self.severity}: a one-session rule has no interval")
        else:
            if self.interval_days is None:
                raise ValueError(f"{self.severity}: {self.sessions} sessions need interval_days")
            if self.maintenance_after_days is not None:
                # The maintenance reminder follows a one-session plan (SPEC sections 4 and 5).
                raise ValueError(f"{self.severity}: only a one-session rule has maintenance")
        return self


class PlanRules(BaseModel):
    """The whole plan table. The body / stretch-marks minimums and every interval are floors
    (a severe plan keeps its 6 sessions); validation refuses a table that breaks the SPEC."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    severity_rules: list[SeverityRule]
    body_or_stretch_marks_min_sessions: int = Field(default=4, ge=2)
    body_or_stretch_marks_interval_days: int = Field(default=30, ge=1)
    min_interval_days: int = Field(default=SPEC_MIN_INTERVAL_DAYS, ge=SPEC_MIN_INTERVAL_DAYS)
    numbing_threshold_mm: float = Field(default=1.0, gt=0, le=MAX_NEEDLE_DEPTH_MM)
    numbing_minutes: int = Field(default=60, ge=1, le=240)
    session_minutes: int = Field(default=60, ge=15, le=480)
    depth_by_concern_mm: dict[Concern, float]
    max_depth_by_area_mm: dict[Area, float]

    @model_validator(mode="after")
    def _complete(self) -> PlanRules:
        severities = [rule.severity for rule in self.severity_rules]
        missing = [s.value for s in Severity if s not in severities]
        if missing:
            raise ValueError(f"severity_rules: no rule for {missing}")
        if len(severities) != len(set(severities)):
            raise ValueError("severity_rules: one rule per severity")
        intervals: dict[str, int | None] = {
            "body_or_stretch_marks_interval_days": self.body_or_stretch_marks_interval_days
        }
        for rule in self.severity_rules:
            intervals[f"{rule.severity}.interval_days"] = rule.interval_days
            intervals[f"{rule.severity}.sensitive_interval_days"] = rule.sensitive_interval_days
        for name, days in intervals.items():
            if days is not None and days < self.min_interval_days:
                raise ValueError(
                    f"{name}: {days} days is below the minimum of {self.min_interval_days} days "
                    "between two sessions"
                )
        for table, keys, known in (
            ("depth_by_concern_mm", self.depth_by_concern_mm, Concern),
            ("max_depth_by_area_mm", self.max_depth_by_area_mm, Area),
        ):
            absent = [k.value for k in known if k not in keys]
            if absent:
                raise ValueError(f"{table}: no depth for {absent}")
            for key, depth in keys.items():
                if not 0 < depth <= MAX_NEEDLE_DEPTH_MM:
                    raise ValueError(
                        f"{table}.{key}: {depth} mm is outside (0, {MAX_NEEDLE_DEPTH_MM}] mm"
                    )
        return self

    def rule_for(self, severity: Severity) -> SeverityRule:
        return next(rule for rule in self.severity_rules if rule.severity is severity)


DEFAULT_RULES = PlanRules(
    version="default-2026.1",
    # SPEC section 4: the sessions a severity needs ("4 to 6 sessions for the biggest
    # corrections"), spaced "from 15 days to one month depending on the sensitivity of the skin".
    severity_rules=[
        SeverityRule(severity=Severity.MILD, sessions=1, maintenance_after_days=90),
        SeverityRule(
            severity=Severity.MODERATE, sessions=4, interval_days=15, sensitive_interval_days=30
        ),
        SeverityRule(severity=Severity.SEVERE, sessions=6, interval_days=30),
    ],
    body_or_stretch_marks_min_sessions=4,
    body_or_stretch_marks_interval_days=30,
    min_interval_days=SPEC_MIN_INTERVAL_DAYS,
    numbing_threshold_mm=1.0,  # "long-needle" work: numbing gel one hour before the session
    numbing_minutes=60,
    session_minutes=60,
    # Target depth per concern, within usual professional ranges: radiance, pigment, pores and
    # fine lines need shallow work; texture and hair loss a little more; wrinkles and laxity
    # about 1 mm; atrophic acne scars and stretch marks the deepest needling.
    depth_by_concern_mm={
        Concern.DULL_COMPLEXION: 0.25,
        Concern.FINE_LINES: 0.5,
        Concern.HYPERPIGMENTATION: 0.5,
        Concern.ENLARGED_PORES: 0.5,
        Concern.TEXTURE: 0.75,
        Concern.HAIR_LOSS: 0.75,
        Concern.WRINKLES: 1.0,
        Concern.SAGGING_SKIN: 1.0,
        Concern.ACNE_SCARS: 1.5,
        Concern.STRETCH_MARKS: 2.0,
    },
    # The deepest an area's skin safely takes: thin skin (neck, decollete, hands, scalp) is
    # capped at 1.0 mm, the face at 1.5 mm, thicker body skin at 2.5 mm.
    max_depth_by_area_mm={
        Area.FACE: 1.5,
        Area.NECK: 1.0,
        Area.DECOLLETE: 1.0,
        Area.HANDS: 1.0,
        Area.SCALP: 1.0,
        Area.BODY: 2.5,
    },
)


def needle_depth_mm(areas: list[Area], concerns: list[Concern], rules: PlanRules) -> float:
    """The deepest concern asks for the most; the most delicate area caps it (face + neck acne
    scars: 1.0 mm). Rounded down to a quarter millimetre so a cap is never exceeded."""
    wanted = max(rules.depth_by_concern_mm[c] for c in concerns)
    cap = min(rules.max_depth_by_area_mm[a] for a in areas)
    steps = math.floor(min(wanted, cap) / DEPTH_STEP_MM)
    return max(steps, 1) * DEPTH_STEP_MM


def plan_for(inp: PlanInput, rules: PlanRules = DEFAULT_RULES) -> PlanSpec:
    """Severity sets sessions and spacing (wider for sensitive skin); body work and stretch marks
    need at least `body_or_stretch_marks_min_sessions` at the wider body spacing whatever the
    severity; nothing is ever closer than `min_interval_days`."""
    rule = rules.rule_for(inp.severity)
    sessions = rule.sessions
    interval = rule.interval_days
    if inp.skin_sensitivity is not SkinSensitivity.NORMAL and rule.sensitive_interval_days:
        interval = rule.sensitive_interval_days
    if Area.BODY in inp.areas or Concern.STRETCH_MARKS in inp.concerns:
        sessions = max(sessions, rules.body_or_stretch_marks_min_sessions)
        interval = max(interval or 0, rules.body_or_stretch_marks_interval_days)
    depth = needle_depth_mm(inp.areas, inp.concerns, rules)
    one_session = sessions == 1
    return PlanSpec(
        total_sessions=sessions,
        interval_days=None if one_session else max(interval or 0, rules.min_interval_days),
        needle_depth_mm=depth,
        numbing=depth >= rules.numbing_threshold_mm,
        maintenance_after_days=rule.maintenance_after_days if one_session else None,
    )
