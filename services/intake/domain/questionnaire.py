"""What a client answers before a treatment: the input of the screening policy.

Every health answer is required and must be a real boolean: a missing answer is never read as
"no" (SPEC section 3), so `StrictBool` with no default.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from shared.vocabulary import Area, Concern, Severity, SkinSensitivity


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Treatment(Strict):
    areas: list[Area] = Field(min_length=1, max_length=len(Area))
    concerns: list[Concern] = Field(min_length=1, max_length=len(Concern))
    severity: Severity


class Skin(Strict):
    sensitivity: SkinSensitivity
    fitzpatrick: int | None = Field(default=None, ge=1, le=6)


class HealthAnswers(Strict):
    pregnant: StrictBool
    active_acne: StrictBool
    cystic_breakout: StrictBool
    inflamed_or_infected_skin: StrictBool
    herpes_outbreak: StrictBool
    anticoagulants: StrictBool
    anti_inflammatories: StrictBool
    autoimmune_disease: StrictBool
    eczema: StrictBool
    rosacea: StrictBool
    frequent_alcohol: StrictBool


class Questionnaire(Strict):
    """The parts of a screening request the policy reads."""

    treatment: Treatment
    skin: Skin
    health: HealthAnswers

    def answers(self) -> dict[str, bool]:
        """Every yes/no fact a policy rule may test, by name."""
        return {
            **self.health.model_dump(),
            "very_sensitive_skin": self.skin.sensitivity is SkinSensitivity.VERY_SENSITIVE,
        }


ANSWER_NAMES: frozenset[str] = frozenset({*HealthAnswers.model_fields, "very_sensitive_skin"})
