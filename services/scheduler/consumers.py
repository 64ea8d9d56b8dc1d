"""Scheduler's Kafka subscriptions: a passed screening becomes a plan and a first booking."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from services.scheduler import handlers
from shared.consumer import IdempotentConsumer
from shared.envelope import Event
from shared.events import EventKind


def subscribe(
    broker: KafkaBroker, consumer: IdempotentConsumer, ctx: handlers.SchedulerContext
) -> None:
    async def screening_passed(event: Event) -> None:
        await handlers.on_screening_passed(ctx, event)

    consumer.subscribe(broker, EventKind.SCREENING_PASSED, screening_passed)
