"""Scheduler HTTP routes: parse, call a handler, map its errors to 4xx (SPEC section 4)."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response
from pydantic import BaseModel

from services.scheduler import handlers
from services.scheduler.commands import (
    CancelSession,
    CompleteSession,
    PlanView,
    RescheduleSession,
    SessionView,
    SiteIn,
)
from shared.access import Permission, Principal
from shared.auth import Caller, require_site, visible
from shared.errors import NotFound
from shared.events import SiteUpdated
from shared.vocabulary import ClientId, SiteId

ROUTES = {
    ("PUT", "/v1/sites/{site_id}"): Permission.CHANGE_SITES,
    ("GET", "/v1/sites/{site_id}"): Permission.READ_SITES,
    ("GET", "/v1/plans/{plan_id}"): Permission.READ_PLANS,
    ("GET", "/v1/clients/{client_id}/plan"): Permission.READ_PLANS,
    ("GET", "/v1/clients/{client_id}/sessions"): Permission.READ_PLANS,
    ("POST", "/v1/sessions/{session_id}/complete"): Permission.COMPLETE_SESSIONS,
    ("POST", "/v1/sessions/{session_id}/reschedule"): Permission.RESCHEDULE_SESSIONS,
    ("POST", "/v1/sessions/{session_id}/cancel"): Permission.RESCHEDULE_SESSIONS,
}
"""Which permission each route needs; `shared.auth.Access` refuses routes missing here."""


class CompletionView(BaseModel):
    session: SessionView
    next_session: SessionView | None


def router(ctx: handlers.SchedulerContext) -> APIRouter:
    api = APIRouter(prefix="/v1")

    async def session_in_scope(caller: Principal, session_id: UUID) -> None:
        """A session of another site answers 404 before anything is changed."""
        plan = await ctx.plans.by_session(session_id)
        visible(caller, plan.site_id if plan else None, plan, f"session {session_id}")

    @api.put(
        "/sites/{site_id}",
        response_model=SiteUpdated,
        tags=["sites"],
        summary="Create or change a site",
        responses={201: {"model": SiteUpdated, "description": "The site was created."}},
    )
    async def put_site(
        site_id: SiteId, body: SiteIn, response: Response, caller: Caller
    ) -> SiteUpdated:
        require_site(caller, site_id)
        site = SiteUpdated(site_id=site_id, **body.model_dump())
        created = await handlers.put_site(ctx, site, caller)
        response.status_code = 201 if created else 200
        return site

    @api.get("/sites/{site_id}", response_model=SiteUpdated, tags=["sites"])
    async def get_site(site_id: SiteId, caller: Caller) -> SiteUpdated:
        visible(caller, site_id, site_id, f"site {site_id}")
        return await handlers.get_site(ctx, site_id)

    @api.get("/plans/{plan_id}", response_model=PlanView, tags=["plans"])
    async def get_plan(plan_id: UUID, caller: Caller) -> PlanView:
        plan = await ctx.plans.get(str(plan_id))
        return PlanView.of(visible(caller, plan.site_id if plan else None, plan, "plan"))

    @api.get(
        "/clients/{client_id}/plan",
        response_model=PlanView,
        tags=["plans"],
        summary="The client's most recent plan",
    )
    async def client_plan(client_id: ClientId, caller: Caller) -> PlanView:
        plans = [p for p in await ctx.plans.for_client(client_id) if caller.sees(p.site_id)]
        if not plans:
            raise NotFound(f"no plan for client {client_id}")
        return PlanView.of(plans[0])

    @api.get(
        "/clients/{client_id}/sessions",
        response_model=list[SessionView],
        tags=["sessions"],
        summary="Every session of the client, in time order",
    )
    async def client_sessions(client_id: ClientId, caller: Caller) -> list[SessionView]:
        plans = [p for p in await ctx.plans.for_client(client_id) if caller.sees(p.site_id)]
        views = [SessionView.of(plan, s) for plan in plans for s in plan.sessions]
        return sorted(views, key=lambda v: v.starts_at)

    @api.post(
        "/sessions/{session_id}/complete",
        response_model=CompletionView,
        tags=["sessions"],
        summary="Record a session as done and book the next one",
        responses={409: {}},
    )
    async def complete(session_id: UUID, body: CompleteSession, caller: Caller) -> CompletionView:
        await session_in_scope(caller, session_id)
        plan = await handlers.complete_session(ctx, session_id, body, caller)
        session = plan.session(session_id)
        upcoming = [s for s in plan.sessions if s.sequence == session.sequence + 1]
        return CompletionView(
            session=SessionView.of(plan, session),
            next_session=SessionView.of(plan, upcoming[0]) if upcoming else None,
        )

    @api.post(
        "/sessions/{session_id}/reschedule",
        response_model=SessionView,
        tags=["sessions"],
        responses={409: {}},
    )
    async def reschedule(session_id: UUID, body: RescheduleSession, caller: Caller) -> SessionView:
        await session_in_scope(caller, session_id)
        plan = await handlers.reschedule_session(ctx, session_id, body)
        return SessionView.of(plan, plan.session(session_id))

    @api.post(
        "/sessions/{session_id}/cancel",
        response_model=SessionView,
        tags=["sessions"],
        responses={409: {}},
    )
    async def cancel(session_id: UUID, body: CancelSession, caller: Caller) -> SessionView:
        await session_in_scope(caller, session_id)
        plan = await handlers.cancel_session(ctx, session_id, body)
        return SessionView.of(plan, plan.session(session_id))

    return api
