"""Plan rules: SPEC section 4's table, the body/stretch-marks floor, spacing and needle depth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from services.scheduler.domain.plans import (
    DEFAULT_RULES,
    PlanInput,
    PlanRules,
    PlanSpec,
    SeverityRule,
    plan_for,
)
from shared.vocabulary import Area, Concern, Severity, SkinSensitivity


def plan(
    severity: str = "moderate",
    sensitivity: str = "normal",
    areas: tuple[str, ...] = ("face",),
    concerns: tuple[str, ...] = ("fine_lines",),
    rules: PlanRules = DEFAULT_RULES,
) -> PlanSpec:
    inp = PlanInput(
        areas=[Area(a) for a in areas],
        concerns=[Concern(c) for c in concerns],
        severity=Severity(severity),
        skin_sensitivity=SkinSensitivity(sensitivity),
    )
    return plan_for(inp, rules)


def rules_with(**changes: Any) -> PlanRules:
    """The default table with some fields replaced, validated again."""
    return PlanRules.model_validate(DEFAULT_RULES.model_dump() | changes)


def test_mild_is_one_session_then_a_maintenance_reminder() -> None:
    spec = plan("mild")
    assert (spec.total_sessions, spec.interval_days, spec.maintenance_after_days) == (1, None, 90)


@pytest.mark.parametrize(
    ("severity", "sensitivity", "sessions", "interval"),
    [
        ("moderate", "normal", 4, 15),
        ("moderate", "sensitive", 4, 30),
        ("moderate", "very_sensitive", 4, 30),
        ("severe", "normal", 6, 30),
        ("severe", "sensitive", 6, 30),
    ],
)
def test_the_severity_table(severity: str, sensitivity: str, sessions: int, interval: int) -> None:
    spec = plan(severity, sensitivity)
    assert (spec.total_sessions, spec.interval_days) == (sessions, interval)
    assert spec.maintenance_after_days is None


@pytest.mark.parametrize("severity", ["mild", "moderate", "severe"])
@pytest.mark.parametrize(
    ("areas", "concerns"),
    [(("body",), ("texture",)), (("face",), ("stretch_marks",)), (("neck", "body"), ("wrinkles",))],
)
def test_body_or_stretch_marks_need_at_least_four_sessions_a_month_apart(
    severity: str, areas: tuple[str, ...], concerns: tuple[str, ...]
) -> None:
    spec = plan(severity, areas=areas, concerns=concerns)
    assert spec.total_sessions == (6 if severity == "severe" else 4)
    assert spec.interval_days == 30
    assert spec.maintenance_after_days is None  # a bumped mild plan is no longer one session


def test_severe_body_work_keeps_six_sessions() -> None:
    spec = plan("severe", areas=("body",), concerns=("stretch_marks",))
    assert (spec.total_sessions, spec.interval_days) == (6, 30)


def test_an_interval_under_fifteen_days_is_refused() -> None:
    rows = [r.model_dump() for r in DEFAULT_RULES.severity_rules]
    rows[1]["interval_days"] = 10
    with pytest.raises(ValidationError, match=r"moderate.interval_days: 10 days is below the"):
        rules_with(severity_rules=rows)
    with pytest.raises(ValidationError, match="body_or_stretch_marks_interval_days: 14 days"):
        rules_with(body_or_stretch_marks_interval_days=14)
    with pytest.raises(ValidationError, match="min_interval_days"):
        rules_with(min_interval_days=10)  # the SPEC floor itself cannot be lowered


def test_a_stricter_floor_widens_the_check() -> None:
    with pytest.raises(ValidationError, match=r"moderate.interval_days: 15 days is below"):
        rules_with(min_interval_days=21)


@pytest.mark.parametrize(
    ("depth", "numbing"), [(0.75, False), (0.99, False), (1.0, True), (1.25, True)]
)
def test_numbing_from_one_millimetre(depth: float, numbing: bool) -> None:
    rules = rules_with(
        depth_by_concern_mm=dict.fromkeys(Concern, depth),
        max_depth_by_area_mm=dict.fromkeys(Area, 2.0),
    )
    spec = plan(rules=rules)
    assert spec.numbing is numbing
    assert spec.needle_depth_mm == (0.75 if depth == 0.99 else depth)  # down to the quarter


def test_default_numbing_follows_the_depth_table() -> None:
    assert plan(concerns=("texture",)).numbing is False  # 0.75 mm
    assert plan(concerns=("wrinkles",)).numbing is True  # 1.0 mm


def test_depth_is_the_deepest_concern_under_the_smallest_area_cap() -> None:
    assert plan(areas=("face", "neck"), concerns=("acne_scars",)).needle_depth_mm == 1.0
    assert plan(areas=("face",), concerns=("acne_scars",)).needle_depth_mm == 1.5
    assert plan(areas=("face",), concerns=("fine_lines", "acne_scars")).needle_depth_mm == 1.5
    assert plan(areas=("body",), concerns=("stretch_marks",)).needle_depth_mm == 2.0
    assert plan(areas=("face",), concerns=("stretch_marks",)).needle_depth_mm == 1.5


def test_depth_is_rounded_down_to_a_quarter_millimetre() -> None:
    rules = rules_with(
        depth_by_concern_mm=dict.fromkeys(Concern, 1.6),
        max_depth_by_area_mm=dict.fromkeys(Area, 1.2),
    )
    assert plan(rules=rules).needle_depth_mm == 1.0


def test_a_missing_severity_is_refused() -> None:
    rows = [r for r in DEFAULT_RULES.severity_rules if r.severity is not Severity.SEVERE]
    with pytest.raises(ValidationError, match=r"no rule for \['severe'\]"):
        rules_with(severity_rules=rows)
    with pytest.raises(ValidationError, match="one rule per severity"):
        rules_with(severity_rules=[*DEFAULT_RULES.severity_rules, rows[0]])


def test_a_missing_concern_or_area_depth_is_refused() -> None:
    depths = dict(DEFAULT_RULES.depth_by_concern_mm)
    del depths[Concern.HAIR_LOSS]
    with pytest.raises(ValidationError, match=r"depth_by_concern_mm: no depth for \['hair_loss'\]"):
        rules_with(depth_by_concern_mm=depths)
    caps = dict(DEFAULT_RULES.max_depth_by_area_mm)
    del caps[Area.SCALP]
    with pytest.raises(ValidationError, match=r"max_depth_by_area_mm: no depth for \['scalp'\]"):
        rules_with(max_depth_by_area_mm=caps)


@pytest.mark.parametrize("depth", [0.0, -1.0, 3.5])
def test_a_depth_outside_zero_to_three_millimetres_is_refused(depth: float) -> None:
    with pytest.raises(ValidationError, match=r"outside \(0, 3.0\] mm"):
        rules_with(max_depth_by_area_mm=dict.fromkeys(Area, depth))


def test_severity_rows_are_consistent() -> None:
    with pytest.raises(ValidationError, match="need interval_days"):
        SeverityRule(severity=Severity.SEVERE, sessions=6)
    with pytest.raises(ValidationError, match="one-session rule has no interval"):
        SeverityRule(severity=Severity.MILD, sessions=1, interval_days=30)
    with pytest.raises(ValidationError, match="only a one-session rule has maintenance"):
        SeverityRule(
            severity=Severity.SEVERE, sessions=6, interval_days=30, maintenance_after_days=90
        )


def test_a_plan_needs_an_area_and_a_concern() -> None:
    with pytest.raises(ValidationError):
        PlanInput(
            areas=[],
            concerns=[Concern.TEXTURE],
            severity=Severity.MILD,
            skin_sensitivity=SkinSensitivity.NORMAL,
        )


def test_a_chain_rules_file_replaces_the_default(tmp_path: Path) -> None:
    from services.scheduler.app import load_rules

    custom = DEFAULT_RULES.model_dump(mode="json")
    custom["version"] = "acme-2027.1"
    custom["depth_by_concern_mm"]["acne_scars"] = 1.0
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(custom))
    rules = load_rules(rules_file)
    assert rules.version == "acme-2027.1"
    assert rules.depth_by_concern_mm[Concern.ACNE_SCARS] == 1.0
    assert load_rules(None) is DEFAULT_RULES
