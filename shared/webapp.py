"""The FastAPI app every service builds the same way: limits, errors, health, guarded API.

One builder instead of three copies of the same `create_app` tail (ARCHITECTURE.md).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI

from shared import tracing
from shared.auth import Access
from shared.health import health_router
from shared.http import BodyLimit, install_error_handlers
from shared.http_metrics import HttpMetrics
from shared.openapi import declare_problems
from shared.runtime import ServiceRuntime
from shared.tracing import TracingMiddleware


def service_app(
    runtime: ServiceRuntime,
    access: Access,
    api: APIRouter,
    *,
    title: str,
    description: str,
    max_body_bytes: int,
) -> FastAPI:
    """An app whose `/v1` routes (`api`) all pass through `access.guard`, and whose OpenAPI
    document declares every error answer (`shared.openapi`)."""
    app = FastAPI(title=title, version="0.1.0", description=description, lifespan=runtime.lifespan)
    app.state.runtime = runtime
    app.state.access = access
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if tracing.enabled():  # off: not even a pass-through layer
        app.add_middleware(TracingMiddleware)
    app.add_middleware(HttpMetrics)  # outermost: it counts the 413s of BodyLimit too
    install_error_handlers(app)
    app.include_router(health_router(runtime, access))
    app.include_router(api, dependencies=[Depends(access.guard)])
    declare_problems(app, access.routes.keys())
    return app
