"""Composition root of the intake service: settings, clients, routes and lifespan."""

from __future__ import annotations

from fastapi import FastAPI

from services.intake.settings import IntakeSettings
from shared.health import health_router
from shared.runtime import ServiceRuntime


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    runtime = ServiceRuntime(settings)
    app = FastAPI(title="clinicflow intake", version="0.1.0", lifespan=runtime.lifespan)
    app.state.runtime = runtime
    app.include_router(health_router(runtime))
    return app
