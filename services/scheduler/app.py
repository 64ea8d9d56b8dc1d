"""Composition root of the scheduler service: settings, clients, routes and lifespan."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import yaml
from fastapi import FastAPI

from services.scheduler import api, consumers, handlers, ops_page
from services.scheduler.adapters.plans import PLANS, PlanStore
from services.scheduler.adapters.rooms import ROOM_DAYS, Rooms
from services.scheduler.adapters.sites import SITES, SiteStore, read_sites_file
from services.scheduler.desk import BookingDesk
from services.scheduler.domain.plans import DEFAULT_RULES, PlanRules
from services.scheduler.settings import SchedulerSettings
from shared import ops
from shared.health import METRICS_ROUTES
from shared.runtime import ServiceRuntime, periodic
from shared.webapp import service_app


def load_rules(path: Path | None) -> PlanRules:
    if path is None:
        return DEFAULT_RULES
    return PlanRules.model_validate(yaml.safe_load(path.read_text()))


def create_app(settings: SchedulerSettings | None = None) -> FastAPI:
    settings = settings or SchedulerSettings()
    runtime = ServiceRuntime(settings)
    uow = runtime.unit_of_work(PLANS, SITES, ROOM_DAYS)
    rooms = Rooms(runtime.db, uow)
    rules = load_rules(settings.plan_rules_file)
    ctx = handlers.SchedulerContext(
        uow=uow,
        plans=PlanStore(runtime.db),
        sites=SiteStore(runtime.db),
        rooms=rooms,
        desk=BookingDesk(
            rooms,
            session_minutes=rules.session_minutes,
            horizon=timedelta(days=settings.booking_horizon_days),
        ),
        rules=rules,
        erased=runtime.db["erased_clients"],
        ids=runtime.ids,
        topic_prefix=settings.topic_prefix,
        concurrency=settings.consumer_concurrency,
        lead=timedelta(hours=settings.booking_lead_hours),
    )
    seed_sites = read_sites_file(settings.sites_file) if settings.sites_file else []

    @runtime.on_start
    async def prepare() -> None:
        await ctx.plans.ensure_indexes()

    seeding = handlers.SiteSeeder(ctx, seed_sites)
    runtime.worker(seeding.run)
    runtime.readiness("sites_file", lambda: seeding.done)
    runtime.worker(periodic(60.0, lambda: handlers.reap_reservations(ctx), "reservation_reaper"))
    consumers.subscribe(runtime.broker, runtime.consumer(), ctx)
    page = ops_page.OpsPage(settings)
    for loop in (page.follow_workflows, page.follow_dead_letters, page.poll_lag):
        runtime.worker(loop)
    app = service_app(
        runtime,
        runtime.access(
            {**api.ROUTES, **METRICS_ROUTES, **ops.ROUTES, **ops.STALLED_ROUTES, **ops_page.ROUTES}
        ),
        api.router(ctx),
        title="clinicflow scheduler",
        description="Sites, treatment plans and bookings.",
        max_body_bytes=settings.max_body_bytes,
    )
    ops.install(app, ops.router(runtime, stalled=lambda: handlers.stalled_plans(ctx)))
    ops_page.install(app, page)
    app.state.context = ctx
    return app
