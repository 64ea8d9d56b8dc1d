"""Intake's HTTP routes: parse, call a handler, map its errors to 4xx (SPEC section 3)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, FastAPI, Header, Query, Request, Response

from services.intake import handlers
from services.intake.commands import ScreeningView, SubmitScreening
from shared.access import ALL_SITES, Permission
from shared.audit import AuditEntry
from shared.auth import Caller, require_site
from shared.http import ProblemResponse, problem
from shared.problems import ErrorCode
from shared.vocabulary import ClientId, SiteId

ROUTES = {
    ("POST", "/v1/screenings"): Permission.SCREEN_CLIENTS,
    ("GET", "/v1/screenings/{screening_id}"): Permission.READ_SCREENINGS,
    ("DELETE", "/v1/clients/{client_id}"): Permission.ERASE_CLIENTS,
    ("GET", "/v1/audit"): Permission.READ_AUDIT,
}
"""Which permission each route needs; `shared.auth.Access` refuses routes missing here."""

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Retrying with the same key returns the first answer and publishes nothing.",
    ),
]


def router(ctx: handlers.IntakeContext) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["screenings"])

    @api.post(
        "/screenings",
        status_code=201,
        response_model=ScreeningView,
        summary="Screen a client for contraindications",
        responses={409: {}},
    )
    async def submit(
        command: SubmitScreening, response: Response, caller: Caller, key: IdempotencyKey = None
    ) -> ScreeningView:
        fingerprint_source = command.model_dump_json().encode()
        submitted = await handlers.submit_screening(ctx, caller, command, fingerprint_source, key)
        if not submitted.created:
            response.headers["Idempotent-Replayed"] = "true"
        return submitted.view

    @api.get(
        "/screenings/{screening_id}",
        response_model=ScreeningView,
        summary="Read a screening's outcome",
    )
    async def read(screening_id: UUID, caller: Caller) -> ScreeningView:
        return await handlers.get_screening(ctx, caller, str(screening_id))

    @api.delete(
        "/clients/{client_id}",
        status_code=204,
        tags=["clients"],
        summary="Erase a client's personal and health data",
    )
    async def erase(client_id: ClientId, caller: Caller) -> Response:
        await handlers.erase_client(ctx, caller, client_id)
        return Response(status_code=204)

    @api.get(
        "/audit",
        response_model=list[AuditEntry],
        tags=["audit"],
        summary="The audit log of your sites, newest first (clinic_admin)",
    )
    async def audit(
        caller: Caller,
        site_id: Annotated[SiteId | None, Query(description="Only this site.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[AuditEntry]:
        if site_id is not None:
            require_site(caller, site_id)
            sites: list[str] | None = [site_id]
        else:
            sites = None if ALL_SITES in caller.sites else sorted(caller.sites)
        return await ctx.audit.newest(sites, limit)

    return api


def install_errors(app: FastAPI) -> None:
    """The service's own error answers."""

    @app.exception_handler(handlers.SitesNotLoaded)
    async def not_ready(_: Request, __: handlers.SitesNotLoaded) -> ProblemResponse:
        detail = "intake is still loading the sites; retry shortly"
        return problem(503, ErrorCode.NOT_READY, detail, headers={"Retry-After": "1"})
