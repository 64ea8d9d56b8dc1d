"""The requests intake accepts and the answers it gives: the HTTP contract of SPEC section 3."""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StrictBool, model_validator

from services.intake.domain.policy import Reason
from services.intake.domain.questionnaire import HealthAnswers, Questionnaire, Skin, Treatment
from shared.events import Phone
from shared.vocabulary import ClientId, Locale, ScreeningOutcome, SiteId


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClientIn(Strict):
    client_id: ClientId | None = Field(
        default=None, description="Your id for the client; generated when absent."
    )
    full_name: str = Field(min_length=1, max_length=200)
    email: EmailStr | None = None
    phone: Phone | None = None
    locale: Locale = Locale.EN

    @model_validator(mode="after")
    def _reachable(self) -> ClientIn:
        if self.email is None and self.phone is None:
            raise ValueError("give an email or a phone so that aftercare can reach the client")
        return self


class Consent(Strict):
    treatment: StrictBool
    data_processing: StrictBool


class SubmitScreening(Strict):
    """`POST /v1/screenings`: a client's questionnaire for one site."""

    site_id: SiteId
    client: ClientIn
    treatment: Treatment
    skin: Skin
    health: HealthAnswers
    consent: Consent

    def questionnaire(self) -> Questionnaire:
        return Questionnaire(treatment=self.treatment, skin=self.skin, health=self.health)


class ScreeningView(BaseModel):
    """The outcome of a screening, as `POST` and `GET /v1/screenings/{id}` return it."""

    screening_id: UUID
    client_id: ClientId
    site_id: SiteId
    outcome: ScreeningOutcome
    reasons: list[Reason]
    recheck_after: date | None
    policy_version: str
    screened_at: datetime
    valid_until: datetime | None = Field(
        description="Until when a passed screening allows booking."
    )
