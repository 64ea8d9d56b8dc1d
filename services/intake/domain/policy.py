"""The screening policy: which answers stop a treatment, for how long, and why.

The policy is data. `DEFAULT_POLICY` below is SPEC section 3's table; a clinic chain may load its
own (same shape, YAML or JSON) with `CLINICFLOW_POLICY_FILE`, and `policy_version` records which
table decided each screening. `screen` is the whole rule: pure, synchronous, no I/O.
"""

from __future__ import annotations

from datetime import date, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.intake.domain.questionnaire import ANSWER_NAMES, Questionnaire
from shared.vocabulary import Locale, ReasonCode, ScreeningOutcome


class Verdict(StrEnum):
    DEFERRED = "deferred"
    DECLINED = "declined"


class Rule(BaseModel):
    """One row of the policy: when `answer` is yes, the screening gets `verdict`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    answer: str
    verdict: Verdict
    code: ReasonCode
    recheck_days: int | None = Field(
        default=None, ge=1, description="Deferred only: days until a new screening; null = none"
    )
    messages: dict[Locale, str]

    @field_validator("answer")
    @classmethod
    def _known_answer(cls, value: str) -> str:
        if value not in ANSWER_NAMES:
            raise ValueError(f"unknown answer {value!r}; known: {sorted(ANSWER_NAMES)}")
        return value

    @model_validator(mode="after")
    def _complete(self) -> Rule:
        if self.verdict is Verdict.DECLINED and self.recheck_days is not None:
            raise ValueError(f"{self.code}: a declined rule has no recheck date")
        missing = set(Locale) - set(self.messages)
        if missing:
            raise ValueError(f"{self.code}: messages missing for {sorted(missing)}")
        return self


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_codes(self) -> Policy:
        codes = [rule.code for rule in self.rules]
        if len(codes) != len(set(codes)):
            raise ValueError("each rule needs its own code")
        return self


class Reason(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: ReasonCode
    message: str


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    outcome: ScreeningOutcome
    reasons: list[Reason]
    recheck_after: date | None
    policy_version: str


def screen(
    questionnaire: Questionnaire, policy: Policy, *, today: date, locale: Locale = Locale.EN
) -> Decision:
    """Apply every rule; declined beats deferred, and a deferral lasts as long as its longest
    reason (no date at all when any deferring reason has none)."""
    answers = questionnaire.answers()
    matched = [rule for rule in policy.rules if answers[rule.answer]]
    reasons = [Reason(code=rule.code, message=rule.messages[locale]) for rule in matched]
    verdicts = {rule.verdict for rule in matched}
    if Verdict.DECLINED in verdicts:
        return Decision(
            outcome=ScreeningOutcome.DECLINED,
            reasons=reasons,
            recheck_after=None,
            policy_version=policy.version,
        )
    if Verdict.DEFERRED in verdicts:
        waits = [rule.recheck_days for rule in matched]
        recheck = None if None in waits else today + timedelta(days=max(w for w in waits if w))
        return Decision(
            outcome=ScreeningOutcome.DEFERRED,
            reasons=reasons,
            recheck_after=recheck,
            policy_version=policy.version,
        )
    return Decision(
        outcome=ScreeningOutcome.PASSED,
        reasons=[],
        recheck_after=None,
        policy_version=policy.version,
    )


def message_for(policy: Policy, code: str, locale: Locale) -> str:
    """The plain-language text of a reason code, for screenings read back later."""
    for rule in policy.rules:
        if rule.code == code:
            return rule.messages[locale]
    return code


DEFAULT_POLICY = Policy(
    version="default-2026.1",
    rules=[
        Rule(
            answer="pregnant",
            verdict=Verdict.DEFERRED,
            code="PREGNANCY",
            messages={
                Locale.EN: "Microneedling is not offered during pregnancy. "
                "Please come back for a new screening after it.",
                Locale.FR: "Le microneedling n'est pas proposé pendant la grossesse. "
                "Revenez pour un nouveau bilan après celle-ci.",
            },
        ),
        Rule(
            answer="active_acne",
            verdict=Verdict.DEFERRED,
            code="ACTIVE_ACNE",
            recheck_days=30,
            messages={
                Locale.EN: "Active acne must settle before treatment; "
                "we can check again in a month.",
                Locale.FR: "L'acné active doit se calmer avant le soin ; un nouveau bilan est "
                "possible dans un mois.",
            },
        ),
        Rule(
            answer="cystic_breakout",
            verdict=Verdict.DEFERRED,
            code="CYSTIC_BREAKOUT",
            recheck_days=30,
            messages={
                Locale.EN: "A cystic breakout needs to clear up first; "
                "we can check again in a month.",
                Locale.FR: "Une poussée d'acné kystique doit d'abord disparaître ; un nouveau "
                "bilan est possible dans un mois.",
            },
        ),
        Rule(
            answer="inflamed_or_infected_skin",
            verdict=Verdict.DEFERRED,
            code="SKIN_INFECTION",
            recheck_days=14,
            messages={
                Locale.EN: "Inflamed or infected skin cannot be treated; "
                "we can check again in two weeks.",
                Locale.FR: "Une peau enflammée ou infectée ne peut pas être traitée ; un nouveau "
                "bilan est possible dans deux semaines.",
            },
        ),
        Rule(
            answer="herpes_outbreak",
            verdict=Verdict.DEFERRED,
            code="HERPES_OUTBREAK",
            recheck_days=14,
            messages={
                Locale.EN: "A cold sore (herpes) outbreak must heal before treatment; "
                "we can check again in two weeks.",
                Locale.FR: "Une poussée d'herpès doit guérir avant le soin ; un nouveau bilan "
                "est possible dans deux semaines.",
            },
        ),
        Rule(
            answer="anti_inflammatories",
            verdict=Verdict.DEFERRED,
            code="ANTI_INFLAMMATORIES",
            recheck_days=7,
            messages={
                Locale.EN: "Anti-inflammatory medicines interfere with the skin's healing; "
                "we can check again in a week.",
                Locale.FR: "Les anti-inflammatoires gênent la cicatrisation de la peau ; un "
                "nouveau bilan est possible dans une semaine.",
            },
        ),
        Rule(
            answer="anticoagulants",
            verdict=Verdict.DECLINED,
            code="ANTICOAGULANTS",
            messages={
                Locale.EN: "Microneedling is not suitable while taking blood thinners.",
                Locale.FR: "Le microneedling n'est pas adapté en cas de traitement anticoagulant.",
            },
        ),
        Rule(
            answer="autoimmune_disease",
            verdict=Verdict.DECLINED,
            code="AUTOIMMUNE_DISEASE",
            messages={
                Locale.EN: "Microneedling is not suitable for people with an autoimmune disease.",
                Locale.FR: "Le microneedling n'est pas adapté en cas de maladie auto-immune.",
            },
        ),
        Rule(
            answer="eczema",
            verdict=Verdict.DECLINED,
            code="ECZEMA",
            messages={
                Locale.EN: "Microneedling is not suitable for skin prone to eczema.",
                Locale.FR: "Le microneedling n'est pas adapté à une peau sujette à l'eczéma.",
            },
        ),
        Rule(
            answer="rosacea",
            verdict=Verdict.DECLINED,
            code="ROSACEA",
            messages={
                Locale.EN: "Microneedling is not suitable for skin with rosacea.",
                Locale.FR: "Le microneedling n'est pas adapté à une peau atteinte de rosacée.",
            },
        ),
        Rule(
            answer="very_sensitive_skin",
            verdict=Verdict.DECLINED,
            code="VERY_SENSITIVE_SKIN",
            messages={
                Locale.EN: "Very sensitive skin reacts too strongly to microneedling.",
                Locale.FR: "Une peau très sensible réagit trop fortement au microneedling.",
            },
        ),
        Rule(
            answer="frequent_alcohol",
            verdict=Verdict.DECLINED,
            code="FREQUENT_ALCOHOL",
            messages={
                Locale.EN: "Frequent drinking dehydrates the skin and makes the treatment "
                "ineffective.",
                Locale.FR: "Une consommation d'alcool fréquente déshydrate la peau et rend le "
                "soin inefficace.",
            },
        ),
    ],
)
