"""What intake does for each request: validate, screen, store with its events, answer."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from prometheus_client import Counter

from services.intake.adapters.audit import AuditLog
from services.intake.adapters.crypto import HealthCipher
from services.intake.adapters.repository import IntakeRepository
from services.intake.commands import ScreeningView, SubmitScreening
from services.intake.domain.policy import Decision, Policy, Reason, message_for, screen
from services.intake.domain.records import Client, Screening
from shared.access import Principal
from shared.audit import AuditAction
from shared.audit import entry as audit_entry
from shared.auth import require_site, visible
from shared.envelope import tombstone
from shared.errors import Conflict, ConflictReason, FieldRejected, NotFound
from shared.events import (
    ClientContact,
    EventKind,
    ScreeningFailed,
    ScreeningPassed,
    SiteUpdated,
)
from shared.ids import Ids
from shared.uow import UnitOfWork
from shared.vocabulary import Locale, ScreeningOutcome

SCREENINGS_TOTAL = Counter(
    "clinicflow_screenings_total", "Screenings decided, by outcome.", ["outcome"]
)


class ClientExists(Exception):
    """A new client's id, derived from the Idempotency-Key, is taken: the request is a retry."""


class SitesNotLoaded(Exception):
    """The view of the sites is still being read (HTTP 503)."""


class SiteDirectory(Protocol):
    """Intake's view of the sites the scheduler publishes (a compacted-topic view)."""

    @property
    def caught_up(self) -> bool: ...

    def get(self, key: str) -> SiteUpdated | None: ...


@dataclass
class IntakeContext:
    """What the handlers need, wired in app.py."""

    repository: IntakeRepository
    uow: UnitOfWork
    cipher: HealthCipher
    policy: Policy
    sites: SiteDirectory
    validity: timedelta
    ids: Ids
    audit: AuditLog


@dataclass(frozen=True)
class Submitted:
    view: ScreeningView
    created: bool


def ids_for(ids: Ids, site_id: str, key: str | None, client_id: str | None) -> tuple[str, str]:
    """Screening and client ids: random, or keyed on the site and Idempotency-Key with the
    deployment's secret, so that a retry finds its first answer and nobody else can."""
    if key is None:
        return str(uuid.uuid4()), client_id or f"c-{uuid.uuid4().hex[:12]}"
    screening_id = str(ids.uuid("screening", site_id, key))
    return screening_id, client_id or f"c-{ids.uuid('client', site_id, key).hex[:12]}"


async def submit_screening(
    ctx: IntakeContext,
    caller: Principal,
    command: SubmitScreening,
    raw_body: bytes,
    key: str | None,
) -> Submitted:
    if not command.consent.treatment:
        raise FieldRejected("consent.treatment", "the client must consent to the treatment")
    if not command.consent.data_processing:
        raise FieldRejected(
            "consent.data_processing", "the client must consent to the processing of their data"
        )
    require_site(caller, command.site_id)
    if not ctx.sites.caught_up:
        raise SitesNotLoaded
    site: SiteUpdated | None = ctx.sites.get(command.site_id)
    if site is None:
        raise FieldRejected("site_id", f"unknown site {command.site_id!r}")

    if command.client.client_id is not None:
        home = await ctx.repository.home_site(command.client.client_id)
        if home is not None:
            visible(caller, home, home, "client")  # another site's client: 404, nothing changes
    screening_id, client_id = ids_for(ctx.ids, command.site_id, key, command.client.client_id)
    fingerprint = ctx.cipher.fingerprint(raw_body)
    # A retry for a new client shows as that client existing (its id came from the key), so
    # only a returning client's request reads first.
    returning = command.client.client_id is not None
    if key and returning and (existing := await ctx.repository.screenings.get(screening_id)):
        return await _replay(ctx, command, client_id, existing, fingerprint)

    screened_at = datetime.now(UTC).replace(microsecond=0)
    today = screened_at.astimezone(ZoneInfo(site.timezone)).date()
    locale = command.client.locale
    decision = screen(command.questionnaire(), ctx.policy, today=today, locale=locale)
    valid_until = (
        screened_at + ctx.validity if decision.outcome is ScreeningOutcome.PASSED else None
    )
    screening = Screening(
        screening_id=screening_id,
        client_id=client_id,
        site_id=command.site_id,
        outcome=decision.outcome,
        reasons=ctx.cipher.encrypt_codes([reason.code for reason in decision.reasons]),
        recheck_after=decision.recheck_after.isoformat() if decision.recheck_after else None,
        policy_version=decision.policy_version,
        screened_at=screened_at,
        valid_until=valid_until,
        locale=locale.value,
        treatment=command.treatment.model_dump(mode="json"),
        skin=command.skin.model_dump(mode="json"),
        health=ctx.cipher.encrypt(command.health),
        idempotency_key=key,
        request_fingerprint=fingerprint,
    )
    event = _event(command, screening_id, client_id, decision, screened_at, valid_until)
    try:
        workflow = await _record_on_client(ctx, command, client_id, event)
    except ClientExists:
        existing = await ctx.repository.screenings.get(screening_id)
        if existing is None:  # the first attempt stopped between its two writes
            existing = screening.model_copy(update={"correlation_id": screening_id})
            await ctx.uow.insert_new(ctx.repository.screenings, [existing])
        return await _replay(ctx, command, client_id, existing, fingerprint)
    screening.correlation_id = str(workflow)
    if not await ctx.uow.insert_new(ctx.repository.screenings, [screening]):
        existing = await ctx.repository.screenings.get(screening_id)
        assert existing is not None
        return await _replay(ctx, command, client_id, existing, fingerprint)
    SCREENINGS_TOTAL.labels(decision.outcome.value).inc()
    return Submitted(_view(screening, decision.reasons), created=True)


def _contact(command: SubmitScreening, client_id: str) -> ClientContact:
    return ClientContact(
        client_id=client_id,
        site_id=command.site_id,
        full_name=command.client.full_name,
        email=command.client.email,
        phone=command.client.phone,
        locale=command.client.locale,
    )


async def _record_on_client(
    ctx: IntakeContext,
    command: SubmitScreening,
    client_id: str,
    event: ScreeningPassed | ScreeningFailed,
) -> uuid.UUID:
    """The screening's event and the contact it causes, committed on the client: a client new
    to intake is one insert; one who came back is a change under their lease."""
    contact = _contact(command, client_id)
    new = Client(client_id=client_id, site_id=command.site_id)
    if command.client.client_id is None:
        workflow = new.screened(event)
        new.reach_at(contact, workflow=workflow)
        if await ctx.uow.add(ctx.repository.clients, new):
            return workflow
        raise ClientExists  # its id came from the Idempotency-Key: a retry
    async with ctx.uow.change(ctx.repository.clients, client_id, create=lambda: new) as client:
        assert client is not None
        workflow = client.screened(event)
        client.reach_at(contact, workflow=workflow)
    return workflow


async def _replay(
    ctx: IntakeContext,
    command: SubmitScreening,
    client_id: str,
    existing: Screening,
    fingerprint: str,
) -> Submitted:
    if existing.erased or existing.request_fingerprint != fingerprint:
        raise Conflict(  # another request, or the first answer was erased
            ConflictReason.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key was first used with a different request",
            field="Idempotency-Key",
        )
    contact = _contact(command, client_id)
    async with ctx.uow.change(ctx.repository.clients, client_id) as client:
        if client is not None:
            client.reach_at(contact, workflow=uuid.UUID(existing.correlation_id))
    return Submitted(view_of(ctx, existing), created=False)


def _event(
    command: SubmitScreening,
    screening_id: str,
    client_id: str,
    decision: Decision,
    screened_at: datetime,
    valid_until: datetime | None,
) -> ScreeningPassed | ScreeningFailed:
    common = {
        "screening_id": screening_id,
        "client_id": client_id,
        "site_id": command.site_id,
        "policy_version": decision.policy_version,
        "screened_at": screened_at,
    }
    if decision.outcome is ScreeningOutcome.PASSED:
        return ScreeningPassed.model_validate(
            {
                **common,
                "areas": command.treatment.areas,
                "concerns": command.treatment.concerns,
                "severity": command.treatment.severity,
                "skin_sensitivity": command.skin.sensitivity,
                "valid_until": valid_until,
            }
        )
    return ScreeningFailed.model_validate(
        {
            **common,
            "outcome": decision.outcome.value,
            "reasons": [reason.code for reason in decision.reasons],
            "recheck_after": decision.recheck_after,
        }
    )


def _view(screening: Screening, reasons: list[Reason]) -> ScreeningView:
    recheck = screening.recheck_after
    return ScreeningView(
        screening_id=uuid.UUID(screening.screening_id),
        client_id=screening.client_id,
        site_id=screening.site_id,
        outcome=screening.outcome,
        reasons=reasons,
        recheck_after=date.fromisoformat(recheck) if recheck else None,
        policy_version=screening.policy_version,
        screened_at=screening.screened_at,
        valid_until=screening.valid_until,
    )


def view_of(ctx: IntakeContext, screening: Screening) -> ScreeningView:
    """A stored screening as the API shows it, with messages in the client's language."""
    locale = Locale(screening.locale or Locale.EN)
    reasons = [
        Reason(code=code, message=message_for(ctx.policy, code, locale))
        for code in ctx.cipher.decrypt_codes(screening.reasons or "")
    ]
    return _view(screening, reasons)


async def get_screening(ctx: IntakeContext, caller: Principal, screening_id: str) -> ScreeningView:
    screening = await ctx.repository.screenings.get(screening_id)
    if screening is not None and screening.erased:
        screening = None  # an erased client's screening is gone for every reader
    site = screening.site_id if screening else None
    found = visible(caller, site, screening, f"screening {screening_id}")
    await ctx.audit.append(
        audit_entry(caller, AuditAction.SCREENING_READ, "screening", screening_id, found.site_id)
    )
    return view_of(ctx, found)


async def erase_client(ctx: IntakeContext, caller: Principal, client_id: str) -> None:
    """Drop personal and health data; screenings keep ids and outcomes (SPEC section 6)."""
    home = await ctx.repository.home_site(client_id)
    site = visible(caller, home, home, f"client {client_id}")
    await ctx.audit.append(
        audit_entry(caller, AuditAction.CLIENT_ERASED, "client", client_id, site)
    )
    for screening_id in await ctx.repository.screenings_of(client_id):
        async with ctx.uow.change(ctx.repository.screenings, screening_id) as screening:
            if screening is not None:
                screening.erase()
    farewell = tombstone(EventKind.CLIENT_CONTACT, client_id, prefix=ctx.uow.prefix)
    async with ctx.uow.change(ctx.repository.clients, client_id) as client:
        if client is None:
            raise NotFound(f"no client {client_id}")
        client.erase(farewell, datetime.now(UTC))
