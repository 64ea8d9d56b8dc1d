"""Notifier's Kafka subscriptions: sessions become timelines, due steps become deliveries, and
every workflow event goes out to the webhooks subscribed to it."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from services.notifier import handlers
from shared.consumer import IdempotentConsumer
from shared.envelope import Event
from shared.events import EventKind


def subscribe(
    broker: KafkaBroker,
    consumer: IdempotentConsumer,
    ctx: handlers.NotifierContext,
    *,
    concurrency: int = 1,
) -> None:
    routes = {
        EventKind.SESSION_COMPLETED: handlers.on_session_completed,
        EventKind.SESSION_SCHEDULED: handlers.on_session_scheduled,
        EventKind.SESSION_CANCELLED: handlers.on_session_cancelled,
        EventKind.AFTERCARE_DUE: handlers.on_aftercare_due,
        EventKind.SCREENING_PASSED: handlers.fan_out,
        EventKind.SCREENING_FAILED: handlers.fan_out,
    }
    for kind, handler in routes.items():

        async def handle(event: Event, handler: handlers.Handler = handler) -> None:
            await handler(ctx, event)

        consumer.subscribe(broker, kind, handle, concurrency=concurrency)
