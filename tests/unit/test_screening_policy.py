"""The default screening policy, row by row and in combination (SPEC section 3)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from services.intake.domain.policy import DEFAULT_POLICY, Policy, screen
from services.intake.domain.questionnaire import HealthAnswers, Questionnaire
from shared.vocabulary import Locale, ScreeningOutcome

TODAY = date(2026, 3, 2)
HEALTH_FIELDS = list(HealthAnswers.model_fields)


def questionnaire(sensitivity: str = "normal", **yes: Any) -> Questionnaire:
    health: dict[str, Any] = dict.fromkeys(HEALTH_FIELDS, False) | yes
    return Questionnaire.model_validate(
        {
            "treatment": {"areas": ["face"], "concerns": ["acne_scars"], "severity": "severe"},
            "skin": {"sensitivity": sensitivity, "fitzpatrick": 4},
            "health": health,
        }
    )


def test_a_clean_questionnaire_passes() -> None:
    decision = screen(questionnaire(), DEFAULT_POLICY, today=TODAY)
    assert decision.outcome is ScreeningOutcome.PASSED
    assert decision.reasons == []
    assert decision.recheck_after is None
    assert decision.policy_version == DEFAULT_POLICY.version


@pytest.mark.parametrize(
    ("answer", "outcome", "code", "recheck"),
    [
        ("pregnant", "deferred", "PREGNANCY", None),
        ("active_acne", "deferred", "ACTIVE_ACNE", date(2026, 4, 1)),
        ("cystic_breakout", "deferred", "CYSTIC_BREAKOUT", date(2026, 4, 1)),
        ("inflamed_or_infected_skin", "deferred", "SKIN_INFECTION", date(2026, 3, 16)),
        ("herpes_outbreak", "deferred", "HERPES_OUTBREAK", date(2026, 3, 16)),
        ("anti_inflammatories", "deferred", "ANTI_INFLAMMATORIES", date(2026, 3, 9)),
        ("anticoagulants", "declined", "ANTICOAGULANTS", None),
        ("autoimmune_disease", "declined", "AUTOIMMUNE_DISEASE", None),
        ("eczema", "declined", "ECZEMA", None),
        ("rosacea", "declined", "ROSACEA", None),
        ("frequent_alcohol", "declined", "FREQUENT_ALCOHOL", None),
    ],
)
def test_each_row_of_the_table(answer: str, outcome: str, code: str, recheck: date | None) -> None:
    decision = screen(questionnaire("normal", **{answer: True}), DEFAULT_POLICY, today=TODAY)
    assert decision.outcome == outcome
    assert [r.code for r in decision.reasons] == [code]
    assert decision.recheck_after == recheck


def test_very_sensitive_skin_is_declined() -> None:
    decision = screen(questionnaire("very_sensitive"), DEFAULT_POLICY, today=TODAY)
    assert decision.outcome is ScreeningOutcome.DECLINED
    assert [r.code for r in decision.reasons] == ["VERY_SENSITIVE_SKIN"]


def test_sensitive_skin_alone_passes() -> None:
    assert screen(questionnaire("sensitive"), DEFAULT_POLICY, today=TODAY).outcome == "passed"


def test_declined_beats_deferred_and_every_reason_is_listed() -> None:
    decision = screen(
        questionnaire(active_acne=True, eczema=True, herpes_outbreak=True),
        DEFAULT_POLICY,
        today=TODAY,
    )
    assert decision.outcome is ScreeningOutcome.DECLINED
    assert {r.code for r in decision.reasons} == {"ACTIVE_ACNE", "ECZEMA", "HERPES_OUTBREAK"}
    assert decision.recheck_after is None


def test_the_latest_recheck_date_wins() -> None:
    decision = screen(
        questionnaire(anti_inflammatories=True, herpes_outbreak=True, active_acne=True),
        DEFAULT_POLICY,
        today=TODAY,
    )
    assert decision.outcome is ScreeningOutcome.DEFERRED
    assert decision.recheck_after == date(2026, 4, 1)


def test_a_deferral_without_date_makes_the_recheck_null() -> None:
    decision = screen(
        questionnaire(pregnant=True, anti_inflammatories=True), DEFAULT_POLICY, today=TODAY
    )
    assert decision.outcome is ScreeningOutcome.DEFERRED
    assert decision.recheck_after is None
    assert [r.code for r in decision.reasons] == ["PREGNANCY", "ANTI_INFLAMMATORIES"]


def test_messages_come_in_french() -> None:
    decision = screen(questionnaire(rosacea=True), DEFAULT_POLICY, today=TODAY, locale=Locale.FR)
    assert "rosacée" in decision.reasons[0].message
    english = screen(questionnaire(rosacea=True), DEFAULT_POLICY, today=TODAY)
    assert "rosacea" in english.reasons[0].message


@pytest.mark.parametrize("locale", list(Locale))
def test_every_rule_speaks_every_language(locale: Locale) -> None:
    for rule in DEFAULT_POLICY.rules:
        assert rule.messages[locale].strip()
    texts = [rule.messages[locale] for rule in DEFAULT_POLICY.rules]
    assert len(set(texts)) == len(texts)


@pytest.mark.parametrize("missing", HEALTH_FIELDS)
def test_a_missing_health_answer_is_never_read_as_no(missing: str) -> None:
    health = dict.fromkeys(HEALTH_FIELDS, False)
    del health[missing]
    with pytest.raises(ValidationError, match=missing):
        Questionnaire.model_validate(
            {
                "treatment": {"areas": ["face"], "concerns": ["texture"], "severity": "mild"},
                "skin": {"sensitivity": "normal"},
                "health": health,
            }
        )


@pytest.mark.parametrize("value", [None, "no", 0, "false"])
def test_a_health_answer_must_be_a_real_boolean(value: object) -> None:
    with pytest.raises(ValidationError, match="pregnant"):
        questionnaire(pregnant=value)


def test_a_chain_can_load_its_own_policy() -> None:
    custom = Policy.model_validate(
        {
            "version": "acme-2027.2",
            "rules": [
                {
                    "answer": "frequent_alcohol",
                    "verdict": "deferred",
                    "code": "ALCOHOL_PAUSE",
                    "recheck_days": 21,
                    "messages": {"en": "Pause drinking first.", "fr": "Faites une pause."},
                }
            ],
        }
    )
    decision = screen(questionnaire(frequent_alcohol=True, eczema=True), custom, today=TODAY)
    assert decision.outcome is ScreeningOutcome.DEFERRED
    assert decision.recheck_after == date(2026, 3, 23)
    assert decision.policy_version == "acme-2027.2"


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ({"answer": "likes_cats"}, "unknown answer"),
        ({"recheck_days": 10, "verdict": "declined"}, "a declined rule has no recheck date"),
        ({"messages": {"en": "only English"}}, "messages missing"),
    ],
)
def test_a_broken_policy_file_is_refused(rule: dict[str, Any], error: str) -> None:
    base = {
        "answer": "eczema",
        "verdict": "declined",
        "code": "X_ONE",
        "messages": {"en": "a", "fr": "b"},
    }
    with pytest.raises(ValidationError, match=error):
        Policy.model_validate({"version": "v", "rules": [base | rule]})
