"""Composition root of the notifier service: settings, clients, routes and lifespan."""

from __future__ import annotations

from fastapi import FastAPI

from services.notifier.settings import NotifierSettings
from shared.health import health_router
from shared.runtime import ServiceRuntime


def create_app(settings: NotifierSettings | None = None) -> FastAPI:
    settings = settings or NotifierSettings()
    runtime = ServiceRuntime(settings)
    app = FastAPI(title="clinicflow notifier", version="0.1.0", lifespan=runtime.lifespan)
    app.state.runtime = runtime
    app.include_router(health_router(runtime))
    return app
