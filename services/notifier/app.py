"""Composition root of the notifier service: settings, clients, channels, loops and routes."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import FastAPI

from services.notifier import api, consumers, handlers
from services.notifier.adapters.channels import (
    Channel,
    EmailChannel,
    LogChannel,
    LoggingSmsProvider,
    SmsChannel,
)
from services.notifier.adapters.secrets import SecretBox
from services.notifier.adapters.store import DELIVERIES, STEPS, WEBHOOKS, NotifierStore
from services.notifier.adapters.webhooks import WebhookSender
from services.notifier.domain.steps import RetrySchedule, StepStatus
from services.notifier.metrics import OVERDUE_SECONDS, count_overdue
from services.notifier.settings import NotifierSettings
from shared import ops
from shared.compacted import CompactedView
from shared.envelope import data_parser
from shared.events import ClientContact, EventKind, SiteUpdated
from shared.health import METRICS_ROUTES
from shared.keys import load_keys
from shared.openapi import declare_webhooks
from shared.outbox import HISTORY_SUFFIX
from shared.retention import Rule
from shared.runtime import ServiceRuntime, periodic
from shared.uow import UPDATED_AT
from shared.webapp import service_app

log = logging.getLogger(__name__)
TIDY_SECONDS = 10.0


def channels_for(settings: NotifierSettings) -> list[Channel]:
    channels: list[Channel] = [LogChannel()]
    if settings.smtp_host:
        channels.append(
            EmailChannel(
                settings.smtp_host,
                settings.smtp_port,
                settings.smtp_sender,
                username=settings.smtp_username,
                password=settings.smtp_password.get_secret_value()
                if settings.smtp_password
                else None,
                start_tls=settings.smtp_start_tls,
            )
        )
    if settings.sms_enabled:
        channels.append(SmsChannel(LoggingSmsProvider()))
    return channels


def create_app(settings: NotifierSettings | None = None) -> FastAPI:
    settings = settings or NotifierSettings()
    runtime = ServiceRuntime(settings)
    store = NotifierStore(runtime.db)
    prefix = settings.topic_prefix

    async def contact_changed(client_id: str, contact: ClientContact | None) -> None:
        await handlers.on_contact_change(ctx, client_id, contact)

    contacts: CompactedView[ClientContact] = CompactedView(
        settings.kafka_bootstrap_servers,
        runtime.topics.name(EventKind.CLIENT_CONTACT),
        data_parser(ClientContact, prefix=prefix),
        on_change=contact_changed,
        client_id="clinicflow-notifier-contacts",
    )
    sites: CompactedView[SiteUpdated] = CompactedView(
        settings.kafka_bootstrap_servers,
        runtime.topics.name(EventKind.SITE_UPDATED),
        data_parser(SiteUpdated, prefix=prefix),
        client_id="clinicflow-notifier-sites",
    )
    sender = WebhookSender(allow_private=settings.webhooks_allow_private)
    keys = load_keys(
        settings.webhook_key.get_secret_value() if settings.webhook_key else None,
        setting="CLINICFLOW_WEBHOOK_KEY",
        purpose="webhook secrets",
        production=settings.environment == "production",
        local_key_file=settings.local_webhook_key_file,
    )
    ctx = handlers.NotifierContext(
        store=store,
        uow=runtime.unit_of_work(STEPS, DELIVERIES, WEBHOOKS),
        contacts=contacts,
        sites=sites,
        channels=channels_for(settings),
        webhooks=sender,
        secrets=SecretBox(keys),
        ids=runtime.ids,
        client_retries=RetrySchedule.doubling(
            timedelta(seconds=settings.delivery_backoff_seconds), settings.delivery_max_attempts
        ),
        webhook_retries=RetrySchedule.of_seconds(
            settings.webhook_retry_delays_seconds, settings.webhook_retry_jitter
        ),
    )
    runtime.on_start(store.ensure_indexes)

    async def seal_legacy_secrets() -> None:
        if sealed := await store.seal_legacy_secrets(ctx.secrets.seal):
            log.info("sealed the plaintext secrets of %d webhook subscriptions", sealed)

    runtime.on_start(seal_legacy_secrets)
    kept = timedelta(days=settings.retention_deliveries_days)
    runtime.retention.keep(Rule(DELIVERIES + HISTORY_SUFFIX, UPDATED_AT, kept))
    runtime.on_stop(sender.aclose)
    runtime.view("contacts", contacts)
    runtime.view("sites", sites)
    interval = settings.timer_interval_seconds
    timer = periodic(interval, lambda: handlers.release_due_steps(ctx), "aftercare_timer")
    runtime.worker(timer, after_views=True)
    runtime.worker(periodic(TIDY_SECONDS, lambda: handlers.tidy(ctx), "tidy"), after_views=True)
    runtime.worker(
        periodic(OVERDUE_SECONDS, lambda: count_overdue(ctx), "overdue"), after_views=True
    )

    async def deliveries() -> None:
        await handlers.run_deliveries(ctx, interval)

    runtime.worker(deliveries, after_views=True)
    consumers.subscribe(
        runtime.broker, runtime.consumer(), ctx, concurrency=settings.consumer_concurrency
    )

    allow_private = settings.webhooks_allow_private
    app = service_app(
        runtime,
        runtime.access({**api.ROUTES, **METRICS_ROUTES, **ops.ROUTES}),
        api.router(ctx, allow_private=allow_private),
        title="clinicflow notifier",
        description="Aftercare timelines, their delivery, and integrator webhooks.",
        max_body_bytes=settings.max_body_bytes,
    )
    declare_webhooks(app, prefix, api.WEBHOOK_EVENTS)

    async def due_unsent() -> int:
        """Steps the timer released whose deliveries are not finished (live, indexed)."""
        return await store.steps.count_documents({"status": StepStatus.DUE.value})

    async def disabled_webhooks() -> int:
        """Subscriptions are few, so counting them by a filter stays cheap."""
        return await store.webhooks.count_documents({"active": True, "disabled_at": {"$ne": None}})

    ops.install(
        app, ops.router(runtime, due_unsent=due_unsent, disabled_webhooks=disabled_webhooks)
    )
    app.state.context = ctx
    return app
