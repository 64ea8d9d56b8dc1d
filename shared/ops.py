"""`GET /v1/ops/status` and `GET /v1/ops/stalled`: what only a service knows about its own
backlog, for `clinicflow status` and `clinicflow stalled` (SPEC section 9).

Consumer lag and DLQ depth are not here: the CLI reads them from Kafka (`shared.lag`), which
knows them even when a service is down. What is here lives in a service's memory or MongoDB,
and is counted only in collections that stay small by design (FerretDB v1 scans a whole
collection for any filter but `_id`). Answers carry counts, ids and dates, nothing personal.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Literal

from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel, Field

from shared.access import Permission
from shared.outbox import DEAD_LETTERS
from shared.runtime import ServiceRuntime

ROUTES = {("GET", "/v1/ops/status"): Permission.READ_OPS}
STALLED_ROUTES = {("GET", "/v1/ops/stalled"): Permission.READ_OPS}
"""The scheduler's extra route: only it knows plans."""


class OutboxBacklog(BaseModel):
    queued: int = Field(description="Changes this process committed and has not published yet.")
    expired_leases: int = Field(
        description="Changes whose writer died before publishing them; the relay's sweep "
        "publishes them again within seconds."
    )
    dead_letters: int = Field(
        description="Outbox entries Kafka refused for good, kept in `outbox_dead_letters`."
    )


class OpsStatus(BaseModel):
    service: str
    outbox: OutboxBacklog
    due_unsent: int | None = Field(
        default=None,
        description="Notifier: aftercare steps whose time has come and that are not delivered "
        "yet (null on the other services).",
    )
    disabled_webhooks: int | None = Field(
        default=None,
        description="Notifier: webhook subscriptions disabled because their receiver failed "
        "for days; each waits for its owner to recover it (null on the other services).",
    )


class StalledPlan(BaseModel):
    """A plan that owes its client a session and has none booked inside its window."""

    plan_id: uuid.UUID
    client_id: str
    site_id: str
    next_sequence: int
    total_sessions: int
    window_opens: date = Field(description="The first local day the next session may take.")
    window_closes: date = Field(description="The last day the scheduler would book it on.")
    booked_at: datetime | None = Field(description="The booked session's start, if any.")
    reason: Literal["not_booked", "outside_window"]


async def outbox_backlog(runtime: ServiceRuntime) -> OutboxBacklog:
    """From the relay's queue and the locks collection, both as small as the work in flight."""
    relay = runtime.relay
    if relay is None:
        return OutboxBacklog(queued=0, expired_leases=0, dead_letters=0)
    expired = await runtime.locks.expired("")
    relayed = tuple(f"{name}:" for name in relay.collections)
    return OutboxBacklog(
        queued=relay.backlog,
        expired_leases=sum(resource.startswith(relayed) for resource in expired),
        dead_letters=await runtime.db[DEAD_LETTERS].estimated_document_count(),
    )


def router(
    runtime: ServiceRuntime,
    *,
    due_unsent: Callable[[], Awaitable[int]] | None = None,
    disabled_webhooks: Callable[[], Awaitable[int]] | None = None,
    stalled: Callable[[], Awaitable[list[StalledPlan]]] | None = None,
) -> APIRouter:
    """The ops routes of one service; `due_unsent`, `disabled_webhooks` and `stalled` where the
    service knows them (add `STALLED_ROUTES` to the route table with `stalled`)."""
    api = APIRouter(prefix="/v1/ops", tags=["operations"])

    @api.get("/status", response_model=OpsStatus, summary="Outbox backlog and due work (ops)")
    async def status() -> OpsStatus:
        return OpsStatus(
            service=runtime.settings.service_name,
            outbox=await outbox_backlog(runtime),
            due_unsent=None if due_unsent is None else await due_unsent(),
            disabled_webhooks=None if disabled_webhooks is None else await disabled_webhooks(),
        )

    if stalled is not None:
        plans = stalled

        @api.get(
            "/stalled",
            response_model=list[StalledPlan],
            summary="Plans whose next session is not booked inside its window (ops)",
        )
        async def stalled_plans() -> list[StalledPlan]:
            return await plans()

    return api


def install(app: FastAPI, api: APIRouter) -> None:
    """Mount `api` behind the app's access guard, like the service's own `/v1` routes."""
    app.include_router(api, dependencies=[Depends(app.state.access.guard)])
