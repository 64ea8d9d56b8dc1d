"""`/healthz`, `/readyz`, `/metrics` and `/asyncapi.json`, the same on every service."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from shared.access import Permission
from shared.auth import Access
from shared.metrics import READY
from shared.runtime import ServiceRuntime
from shared.schemas import asyncapi_for

METRICS_ROUTES = {("GET", "/metrics"): Permission.READ_METRICS}
"""The shared routes that need a token: `/healthz` and `/readyz` stay open for probes."""


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, bool] = Field(description="Each dependency, and whether it answered.")


def health_router(runtime: ServiceRuntime, access: Access) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": runtime.settings.service_name}

    @router.get(
        "/readyz",
        summary="Kafka and MongoDB answer, start-up finished",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "A check failed."}},
    )
    async def readyz() -> JSONResponse:
        checks = await runtime.ready()
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": checks},
            status_code=200 if ok else 503,
        )

    @router.get(
        "/metrics",
        summary="Prometheus metrics (ops role)",
        response_class=Response,
        dependencies=[Depends(access.guard)],
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        for check, passed in (await runtime.ready()).items():
            READY.labels(check).set(passed)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/asyncapi.json", summary="AsyncAPI document of every clinicflow topic")
    async def asyncapi_document() -> dict[str, Any]:
        settings = runtime.settings
        return asyncapi_for(
            settings.topic_prefix, settings.topic_partitions, settings.topic_replication_factor
        )

    return router
