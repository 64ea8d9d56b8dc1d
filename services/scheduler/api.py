"""Scheduler HTTP routes: parse, call a handler, map its errors to 4xx (SPEC section 4)."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
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
from shared.errors import NotFound
from shared.events import SiteUpdated
from shared.http import problem
from shared.vocabulary import ClientId, SiteId


class CompletionView(BaseModel):
    session: SessionView
    next_session: SessionView | None


def router(ctx: handlers.SchedulerContext) -> APIRouter:
    api = APIRouter(prefix="/v1")

    @api.put(
        "/sites/{site_id}",
        response_model=SiteUpdated,
        tags=["sites"],
        summary="Create or change a site",
    )
    async def put_site(site_id: SiteId, body: SiteIn, response: Response) -> SiteUpdated:
        site = SiteUpdated(site_id=site_id, **body.model_dump())
        created = await handlers.put_site(ctx, site)
        response.status_code = 201 if created else 200
        return site

    @api.get("/sites/{site_id}", response_model=SiteUpdated, tags=["sites"], responses={404: {}})
    async def get_site(site_id: SiteId) -> SiteUpdated:
        return await handlers.get_site(ctx, site_id)

    @api.get("/plans/{plan_id}", response_model=PlanView, tags=["plans"], responses={404: {}})
    async def get_plan(plan_id: UUID) -> PlanView:
        plan = await ctx.plans.get(plan_id)
        if plan is None:
            raise NotFound(f"no plan {plan_id}")
        return PlanView.of(plan)

    @api.get(
        "/clients/{client_id}/plan",
        response_model=PlanView,
        tags=["plans"],
        summary="The client's most recent plan",
        responses={404: {}},
    )
    async def client_plan(client_id: ClientId) -> PlanView:
        plans = await ctx.plans.for_client(client_id)
        if not plans:
            raise NotFound(f"no plan for client {client_id}")
        return PlanView.of(plans[0])

    @api.get(
        "/clients/{client_id}/sessions",
        response_model=list[SessionView],
        tags=["sessions"],
        summary="Every session of the client, in time order",
    )
    async def client_sessions(client_id: ClientId) -> list[SessionView]:
        plans = await ctx.plans.for_client(client_id)
        views = [SessionView.of(plan, s) for plan in plans for s in plan.sessions]
        return sorted(views, key=lambda v: v.starts_at)

    @api.post(
        "/sessions/{session_id}/complete",
        response_model=CompletionView,
        tags=["sessions"],
        summary="Record a session as done and book the next one",
        responses={404: {}, 409: {}, 422: {}},
    )
    async def complete(session_id: UUID, body: CompleteSession) -> CompletionView:
        plan = await handlers.complete_session(ctx, session_id, body)
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
        responses={404: {}, 409: {}},
    )
    async def reschedule(session_id: UUID, body: RescheduleSession) -> SessionView:
        plan = await handlers.reschedule_session(ctx, session_id, body)
        return SessionView.of(plan, plan.session(session_id))

    @api.post(
        "/sessions/{session_id}/cancel",
        response_model=SessionView,
        tags=["sessions"],
        responses={404: {}, 409: {}},
    )
    async def cancel(session_id: UUID, body: CancelSession) -> SessionView:
        plan = await handlers.cancel_session(ctx, session_id, body)
        return SessionView.of(plan, plan.session(session_id))

    return api


def install(app: FastAPI, ctx: handlers.SchedulerContext) -> None:
    app.include_router(router(ctx))

    @app.exception_handler(handlers.Conflict)
    async def conflict(_: Request, exc: handlers.Conflict) -> JSONResponse:
        return problem(409, "conflict", exc.message, reason=exc.reason)
