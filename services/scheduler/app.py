"""Composition root of the scheduler service: settings, clients, routes and lifespan."""

from __future__ import annotations

from fastapi import FastAPI

from services.scheduler.settings import SchedulerSettings
from shared.health import health_router
from shared.runtime import ServiceRuntime


def create_app(settings: SchedulerSettings | None = None) -> FastAPI:
    settings = settings or SchedulerSettings()
    runtime = ServiceRuntime(settings)
    app = FastAPI(title="clinicflow scheduler", version="0.1.0", lifespan=runtime.lifespan)
    app.state.runtime = runtime
    app.include_router(health_router(runtime))
    return app
