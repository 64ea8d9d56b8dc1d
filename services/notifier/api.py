"""Notifier HTTP routes: the aftercare timeline and integrator webhooks (SPEC section 5)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from services.notifier import handlers
from services.notifier.adapters.webhooks import UnsafeWebhookUrl, check_webhook_url
from services.notifier.domain.steps import StepStatus
from services.notifier.domain.webhooks import Webhook
from shared.access import Permission
from shared.auth import Caller
from shared.errors import FieldRejected, NotFound
from shared.events import EventKind
from shared.http import problem
from shared.vocabulary import AftercareStep, ClientId

ROUTES = {
    ("GET", "/v1/clients/{client_id}/aftercare"): Permission.READ_AFTERCARE,
    ("POST", "/v1/webhooks"): Permission.MANAGE_WEBHOOKS,
    ("GET", "/v1/webhooks"): Permission.MANAGE_WEBHOOKS,
    ("DELETE", "/v1/webhooks/{webhook_id}"): Permission.MANAGE_WEBHOOKS,
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): Permission.MANAGE_WEBHOOKS,
}
"""Which permission each route needs; `shared.auth.Access` refuses routes missing here."""

WEBHOOK_EVENTS = (
    EventKind.AFTERCARE_DUE,
    EventKind.SESSION_SCHEDULED,
    EventKind.SESSION_COMPLETED,
    EventKind.SESSION_CANCELLED,
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
    events: list[str] = Field(min_length=1, examples=[["clinic.aftercare_due"]])
    secret: str = Field(
        min_length=16, max_length=256, description="Signs each POST (HMAC-SHA256); kept secret."
    )


class WebhookView(BaseModel):
    webhook_id: str
    url: str
    events: list[str]
    sites: list[str] = Field(description="The sites whose events it receives (`*`: all).")
    active: bool
    created_at: datetime


def _webhook_view(webhook: Webhook) -> WebhookView:
    """What an integrator sees of its subscription: everything but the secret and the owner."""
    return WebhookView.model_validate(webhook, from_attributes=True)


def router(ctx: handlers.NotifierContext, *, allow_private: bool) -> APIRouter:
    api = APIRouter(prefix="/v1")
    allowed_events = {ctx.uow.prefix + kind.value for kind in WEBHOOK_EVENTS}

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
        response_model=WebhookView,
        tags=["webhooks"],
        summary="Subscribe a URL to event types",
        responses={422: {}},
    )
    async def subscribe(body: WebhookIn, caller: Caller) -> WebhookView:
        unknown = sorted(set(body.events) - allowed_events)
        if unknown:
            raise FieldRejected(
                "events", f"unknown event types {unknown}; choose from {sorted(allowed_events)}"
            )
        try:
            url = await asyncio.to_thread(check_webhook_url, body.url, allow_private=allow_private)
        except UnsafeWebhookUrl as exc:
            raise FieldRejected("url", str(exc)) from exc
        webhook = Webhook(
            webhook_id=str(uuid.uuid4()),
            url=url,
            events=sorted(set(body.events)),
            secret=body.secret,
            owner=f"{caller.kind}:{caller.subject}",
            sites=sorted(caller.sites),
            created_at=datetime.now(UTC),
        )
        await ctx.uow.insert_new(ctx.store.webhook_store, [webhook])
        ctx.store.forget_webhooks()
        return _webhook_view(webhook)

    @api.get("/webhooks", response_model=list[WebhookView], tags=["webhooks"])
    async def list_webhooks(caller: Caller) -> list[WebhookView]:
        owner = f"{caller.kind}:{caller.subject}"
        found = await ctx.store.webhook_store.find_all({"active": True, "owner": owner})
        return [_webhook_view(webhook) for webhook in found]

    @api.delete("/webhooks/{webhook_id}", status_code=204, tags=["webhooks"], responses={404: {}})
    async def unsubscribe(webhook_id: uuid.UUID, caller: Caller) -> Response:
        owner = f"{caller.kind}:{caller.subject}"
        async with ctx.uow.change(ctx.store.webhook_store, str(webhook_id)) as webhook:
            ended = webhook is not None and webhook.owned_by(owner) and webhook.unsubscribe()
        ctx.store.forget_webhooks()
        if not ended:
            return problem(404, "not_found", f"no webhook {webhook_id}")
        return Response(status_code=204)

    @api.get("/webhooks/{webhook_id}/deliveries", tags=["webhooks"], summary="Every attempt")
    async def deliveries(webhook_id: uuid.UUID, caller: Caller) -> list[dict[str, Any]]:
        owner = f"{caller.kind}:{caller.subject}"
        webhook = await ctx.store.webhook_store.get(str(webhook_id))
        if webhook is None or not webhook.owned_by(owner):
            raise NotFound(f"no webhook {webhook_id}")
        found = await ctx.store.delivery_store.find_all({"webhook_id": str(webhook_id)})
        return [
            {
                "event_id": delivery.event_id,
                "event_type": delivery.event_type,
                "status": delivery.status,
                "attempts": [
                    {k: v for k, v in attempt.items() if k in {"at", "ok", "error"}}
                    for attempt in delivery.attempts
                ],
            }
            for delivery in sorted(found, key=lambda d: d.created_at)
        ]

    return api
