"""Composition root of the intake service: settings, clients, routes and lifespan."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import yaml
from fastapi import FastAPI

from services.intake import api, consumers
from services.intake.adapters.audit import AuditLog
from services.intake.adapters.crypto import HealthCipher
from services.intake.adapters.repository import CLIENTS, SCREENINGS, IntakeRepository
from services.intake.domain.policy import DEFAULT_POLICY, Policy
from services.intake.handlers import IntakeContext
from services.intake.settings import IntakeSettings
from shared import ops
from shared.compacted import CompactedView
from shared.envelope import data_parser
from shared.events import EventKind, SiteUpdated
from shared.health import METRICS_ROUTES
from shared.keys import load_keys
from shared.runtime import ServiceRuntime
from shared.webapp import service_app


def load_policy(path: Path | None) -> Policy:
    """The chain's own policy file (YAML or JSON), or the default table."""
    if path is None:
        return DEFAULT_POLICY
    return Policy.model_validate(yaml.safe_load(path.read_text()))


def create_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    keys = load_keys(
        settings.health_key.get_secret_value() if settings.health_key else None,
        setting="CLINICFLOW_HEALTH_KEY",
        purpose="health answers",
        production=settings.environment == "production",
        local_key_file=settings.local_key_file,
    )
    runtime = ServiceRuntime(settings)
    repository = IntakeRepository(runtime.db)
    prefix = settings.topic_prefix

    sites: CompactedView[SiteUpdated] = CompactedView(
        settings.kafka_bootstrap_servers,
        runtime.topics.name(EventKind.SITE_UPDATED),
        data_parser(SiteUpdated, prefix=prefix),
        client_id="clinicflow-intake-sites",
    )
    runtime.view("sites", sites)
    runtime.on_start(repository.ensure_indexes)
    audit = AuditLog(runtime.db)
    runtime.on_start(audit.ensure_indexes)
    consumers.subscribe(runtime.broker, runtime.consumer("-audit"), audit)
    ctx = IntakeContext(
        repository=repository,
        uow=runtime.unit_of_work(SCREENINGS, CLIENTS),
        cipher=HealthCipher(keys),
        policy=load_policy(settings.policy_file),
        sites=sites,
        validity=timedelta(days=settings.screening_validity_days),
        ids=runtime.ids,
        audit=audit,
    )
    access = runtime.access(
        {**api.ROUTES, **METRICS_ROUTES, **ops.ROUTES}, on_key=audit.key_changed
    )
    app = service_app(
        runtime,
        access,
        api.router(ctx),
        title="clinicflow intake",
        description="Screens clients for contraindications before microneedling.",
        max_body_bytes=settings.max_body_bytes,
    )
    api.install_errors(app)
    ops.install(app, ops.router(runtime))
    app.state.context = ctx
    return app
