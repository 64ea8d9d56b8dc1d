"""Scheduler's Kafka subscriptions: a passed screening becomes a plan and a first booking;
an erased client's future sessions are cancelled."""

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

    consumer.subscribe(
        broker, EventKind.SCREENING_PASSED, screening_passed, concurrency=ctx.concurrency
    )

    async def contact_changed(event: Event) -> None:
        """A contact published again (the client came back): they are no longer erased."""
        client_id = str(event.envelope.subject)
        # Read by id first: any other filter scans the collection on FerretDB v1, and one
        # client's contact events and tombstones arrive in order, so nothing changes between.
        marker = await ctx.erased.find_one({"_id": client_id})
        if marker is not None and marker["erased_at"] < event.envelope.time:
            await ctx.erased.delete_one({"_id": client_id})

    async def client_erased(client_id: str) -> None:
        await handlers.on_client_erased(ctx, client_id)

    consumer.subscribe(
        broker,
        EventKind.CLIENT_CONTACT,
        contact_changed,
        on_tombstone=client_erased,
        concurrency=ctx.concurrency,
    )
