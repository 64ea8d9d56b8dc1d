"""Notifier HTTP routes: the aftercare timeline and integrator webhooks (SPEC section 5)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from services.notifier import handlers
from services.notifier.adapters.webhooks import UnsafeWebhookUrl, check_webhook_url
from services.notifier.domain.steps import DeliveryStatus, StepStatus
from services.notifier.domain.webhooks import SECRET_PREFIX, Webhook, secret_problem
from shared.access import ALL_SITES, Permission, Principal, SiteScope
from shared.auth import Caller
from shared.errors import FieldRejected, Forbidden, NotFound
from shared.events import COMPACTED, EventKind
from shared.vocabulary import AftercareStep, ClientId, UtcDatetime

ROUTES = {
    ("GET", "/v1/clients/{client_id}/aftercare"): Permission.READ_AFTERCARE,
    ("POST", "/v1/webhooks"): Permission.MANAGE_WEBHOOKS,
    ("GET", "/v1/webhooks"): Permission.MANAGE_WEBHOOKS,
    ("GET", "/v1/webhooks/{webhook_id}"): Permission.MANAGE_WEBHOOKS,
    ("DELETE", "/v1/webhooks/{webhook_id}"): Permission.MANAGE_WEBHOOKS,
    ("POST", "/v1/webhooks/{webhook_id}/rotate"): Permission.MANAGE_WEBHOOKS,
    ("POST", "/v1/webhooks/{webhook_id}/recover"): Permission.MANAGE_WEBHOOKS,
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): Permission.MANAGE_WEBHOOKS,
}
"""Which permission each route needs; `shared.auth.Access` refuses routes missing here."""

WEBHOOK_EVENTS = tuple(kind for kind in EventKind if kind not in COMPACTED)
"""Every workflow event type (SPEC section 7). The compacted topics are state, not workflow:
contacts carry contact details, which integrators read from Kafka under their own grant."""

SECRET_FIELD = Field(
    default=None,
    min_length=len(SECRET_PREFIX) + 32,
    max_length=256,
    description="Your own Standard Webhooks secret (`whsec_` + base64 of at least 24 random "
    "bytes); leave it out and one is generated. Shown once, in this answer.",
    examples=[None],
)


class AftercareView(BaseModel):
    aftercare_id: uuid.UUID
    session_id: uuid.UUID
    step: AftercareStep
    due_at: datetime
    status: StepStatus
    title: str
    instructions: list[str]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, examples=["https://crm.example.org/hooks/clinicflow"])
    events: list[str] = Field(
        min_length=1, max_length=len(EventKind), examples=[["clinic.aftercare_due"]]
    )
    sites: list[SiteScope] | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="The sites whose events it receives, within your token's; all of them "
        "when left out.",
        examples=[["paris-01"]],
    )
    secret: str | None = SECRET_FIELD


class RotationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str | None = SECRET_FIELD


class RecoveryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: UtcDatetime = Field(description="Queue again the deliveries that failed since then.")


class WebhookView(BaseModel):
    webhook_id: str
    url: str
    events: list[str]
    sites: list[str] = Field(description="The sites whose events it receives (`*`: all).")
    status: Literal["active", "disabled", "ended"] = Field(
        description="`disabled`: every delivery failed for 5 days; recover it to resume."
    )
    active: bool = Field(description="Not ended (a disabled subscription is still active).")
    created_at: datetime
    failing_since: datetime | None = Field(
        description="Since when every delivery has failed; null while they get through."
    )
    disabled_at: datetime | None
    disabled_reason: str | None


class WebhookWithSecret(WebhookView):
    secret: str = Field(description="Verifies the signatures; shown this once only.")


class Recovery(BaseModel):
    recovered: int = Field(description="Failed deliveries queued again.")


class AttemptView(BaseModel):
    at: datetime
    ok: bool
    error: str | None = None


class DeliveryView(BaseModel):
    event_id: str
    event_type: str | None
    status: DeliveryStatus
    created_at: datetime
    next_attempt_at: datetime | None = Field(description="When it is tried next, if pending.")
    attempts: list[AttemptView]


def _webhook_view(webhook: Webhook) -> WebhookView:
    """What an integrator sees of its subscription: everything but the secrets and the owner."""
    return WebhookView.model_validate(webhook, from_attributes=True)


def _check_secret(secret: str | None) -> None:
    if secret is not None and (why := secret_problem(secret)) is not None:
        raise FieldRejected("secret", why)


def router(ctx: handlers.NotifierContext, *, allow_private: bool) -> APIRouter:
    api = APIRouter(prefix="/v1")
    allowed_events = {ctx.uow.prefix + kind.value for kind in WEBHOOK_EVENTS}

    def owner_of(caller: Principal) -> str:
        return f"{caller.kind}:{caller.subject}"

    async def owned(webhook_id: uuid.UUID, caller: Principal) -> Webhook:
        webhook = await ctx.store.webhook_store.get(str(webhook_id))
        if webhook is None or not webhook.owned_by(owner_of(caller)):
            raise NotFound(f"no webhook {webhook_id}")
        return webhook

    def sites_for(requested: list[str] | None, caller: Principal) -> list[str]:
        """The sites a subscription covers: those asked for, each within the caller's."""
        if requested is None:
            return sorted(caller.sites)
        for site in requested:
            covered = ALL_SITES in caller.sites if site == ALL_SITES else caller.sees(site)
            if not covered:
                raise Forbidden(f"sites: your token does not cover site {site!r}")
            if site != ALL_SITES and ctx.sites.get(site) is None:
                raise FieldRejected("sites", f"no site {site!r}")
        return sorted(set(requested))

    @api.get(
        "/clients/{client_id}/aftercare",
        response_model=list[AftercareView],
        tags=["aftercare"],
        summary="Every aftercare step of the client, in time order",
    )
    async def aftercare(client_id: ClientId, caller: Caller) -> list[AftercareView]:
        steps = await ctx.store.step_store.find_all({"client_id": client_id})
        return [
            AftercareView(
                aftercare_id=step.aftercare_id,
                session_id=step.session_id,
                step=step.step,
                due_at=step.due_at,
                status=step.status,
                title=step.title,
                instructions=step.instructions,
            )
            for step in sorted(steps, key=lambda s: s.due_at)
            if caller.sees(step.site_id)
        ]

    @api.post(
        "/webhooks",
        status_code=201,
        response_model=WebhookWithSecret,
        tags=["webhooks"],
        summary="Subscribe a URL to event types of some of your sites",
    )
    async def subscribe(body: WebhookIn, caller: Caller) -> WebhookWithSecret:
        unknown = sorted(set(body.events) - allowed_events)
        if unknown:
            raise FieldRejected(
                "events", f"unknown event types {unknown}; choose from {sorted(allowed_events)}"
            )
        _check_secret(body.secret)
        sites = sites_for(body.sites, caller)
        try:
            url = await asyncio.to_thread(check_webhook_url, body.url, allow_private=allow_private)
        except UnsafeWebhookUrl as exc:
            raise FieldRejected("url", str(exc)) from exc
        webhook, secret = await handlers.subscribe_webhook(
            ctx, url=url, events=body.events, sites=sites, owner=owner_of(caller),
            secret=body.secret,
        )  # fmt: skip
        return WebhookWithSecret(**_webhook_view(webhook).model_dump(), secret=secret)

    @api.get("/webhooks", response_model=list[WebhookView], tags=["webhooks"])
    async def list_webhooks(caller: Caller) -> list[WebhookView]:
        found = await ctx.store.webhook_store.find_all({"active": True, "owner": owner_of(caller)})
        return [_webhook_view(webhook) for webhook in found]

    @api.get("/webhooks/{webhook_id}", response_model=WebhookView, tags=["webhooks"])
    async def get_webhook(webhook_id: uuid.UUID, caller: Caller) -> WebhookView:
        return _webhook_view(await owned(webhook_id, caller))

    @api.delete("/webhooks/{webhook_id}", status_code=204, tags=["webhooks"])
    async def unsubscribe(webhook_id: uuid.UUID, caller: Caller) -> Response:
        async with ctx.uow.change(ctx.store.webhook_store, str(webhook_id)) as webhook:
            ended = (
                webhook is not None and webhook.owned_by(owner_of(caller)) and webhook.unsubscribe()
            )
        ctx.store.forget_webhooks()
        if not ended:
            raise NotFound(f"no webhook {webhook_id}")
        return Response(status_code=204)

    @api.post(
        "/webhooks/{webhook_id}/rotate",
        response_model=WebhookWithSecret,
        tags=["webhooks"],
        summary="Sign with a new secret; the old one keeps signing beside it for 24 hours",
    )
    async def rotate(
        webhook_id: uuid.UUID, caller: Caller, body: RotationIn | None = None
    ) -> WebhookWithSecret:
        given = body.secret if body is not None else None
        _check_secret(given)
        rotated = await handlers.rotate_secret(ctx, str(webhook_id), owner_of(caller), given)
        if rotated is None:
            raise NotFound(f"no webhook {webhook_id}")
        webhook, secret = rotated
        return WebhookWithSecret(**_webhook_view(webhook).model_dump(), secret=secret)

    @api.post(
        "/webhooks/{webhook_id}/recover",
        status_code=202,
        response_model=Recovery,
        tags=["webhooks"],
        summary="Enable the subscription again and queue its failed deliveries since a time",
    )
    async def recover(webhook_id: uuid.UUID, body: RecoveryIn, caller: Caller) -> Recovery:
        recovered = await handlers.recover_webhook(
            ctx, str(webhook_id), owner_of(caller), body.since
        )
        if recovered is None:
            raise NotFound(f"no webhook {webhook_id}")
        return Recovery(recovered=recovered)

    @api.get(
        "/webhooks/{webhook_id}/deliveries",
        response_model=list[DeliveryView],
        tags=["webhooks"],
        summary="Every delivery to it, oldest first, with every attempt",
    )
    async def deliveries(webhook_id: uuid.UUID, caller: Caller) -> list[DeliveryView]:
        await owned(webhook_id, caller)
        found = await ctx.store.delivery_store.find_all({"webhook_id": str(webhook_id)})
        return [
            DeliveryView(
                event_id=delivery.event_id,
                event_type=delivery.event_type,
                status=delivery.status,
                created_at=delivery.created_at,
                next_attempt_at=delivery.next_attempt_at
                if delivery.status is DeliveryStatus.PENDING
                else None,
                attempts=[AttemptView.model_validate(attempt) for attempt in delivery.attempts],
            )
            for delivery in sorted(found, key=lambda d: d.created_at)
        ]

    return api
