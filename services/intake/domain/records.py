"""Intake's aggregates: a client (contact, and the events of their screenings) and each
screening as stored (answers sealed).

A new client's first screening is then two inserts: the client with both events in its outbox,
and the screening. The health answers and the reason codes arrive here already encrypted by
the adapter; these classes only decide what is kept, what erasure drops and what goes out.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from shared.aggregate import Aggregate
from shared.envelope import Record
from shared.events import ClientContact, ScreeningFailed, ScreeningPassed
from shared.vocabulary import ScreeningOutcome

PERSONAL = (
    "health",
    "treatment",
    "skin",
    "locale",
    "reasons",
    "recheck_after",
    "idempotency_key",
    "request_fingerprint",
)
"""What erasure drops from each screening (SPEC 6): answers, reasons derived from them, the
recheck date and the idempotency record. Ids, site, outcome and dates stay, for the counts."""


class Screening(Aggregate):
    screening_id: str
    client_id: str
    site_id: str
    outcome: ScreeningOutcome
    reasons: str | None = None
    recheck_after: str | None = None
    policy_version: str
    screened_at: datetime
    valid_until: datetime | None = None
    locale: str | None = None
    treatment: dict[str, Any] | None = None
    skin: dict[str, Any] | None = None
    health: str | None = None
    idempotency_key: str | None = None
    request_fingerprint: str | None = None
    correlation_id: str = ""
    erased: bool = False

    def erase(self) -> None:
        for name in PERSONAL:
            setattr(self, name, None)
        self.erased = True


class Client(Aggregate):
    client_id: str
    site_id: str
    contact: dict[str, Any] | None = None
    erased_at: datetime | None = None

    def screened(self, event: ScreeningPassed | ScreeningFailed) -> uuid.UUID:
        """Record a screening's outcome; it starts a workflow (the id is its correlation id)."""
        return self.record(event, correlation=None, cause=None)

    def reach_at(self, contact: ClientContact, *, workflow: uuid.UUID) -> bool:
        """Keep the contact details; publish them only when they changed (or came back)."""
        details = contact.model_dump(mode="json", exclude={"client_id", "site_id"})
        if self.contact == details and self.erased_at is None:
            return False
        self.contact, self.erased_at = details, None
        self.record(contact, correlation=workflow, cause=workflow)
        return True

    def erase(self, tombstone: Record, now: datetime) -> None:
        """Forget the contact and publish the tombstone (once)."""
        if self.erased_at is not None and self.contact is None:
            return
        self.contact, self.erased_at = None, now
        self.attach(tombstone)
