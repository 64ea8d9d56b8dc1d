"""Idempotent consumers with retries and a dead-letter queue, on FastStream subscribers.

Exactly-once effects from at-least-once delivery rest on two things (docs/adr/0008). Every
handler is idempotent by construction: what it creates has an id derived from the event (a
second insert fails on the unique `_id`), and what it changes is a state machine that ignores
a step it has taken already. And a repeat is skipped before it reaches the handler when this
process has seen its event id (a bounded in-memory set). Each processed event is also recorded
(unique `_id` in `processed_events`: a repeat shows as `duplicate` in the metrics), but never
read back: on FerretDB v1 a read by `_id` scans the whole collection, and this one only grows.
The Kafka offset is committed only after the handler's work and that record are stored.

A record that cannot be processed goes to `<topic>.dlq` with the error and where it came from
in headers, and the partition moves on: a bad JSON value or a schema violation at once, a
handler failure after its retries. Infrastructure outages (MongoDB or Kafka unreachable) are not
the record's fault, so they are not dead-lettered: the offset is rewound and the record retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from opentelemetry.trace import Status, StatusCode
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure

from shared import tracing
from shared.batching import InsertBatcher
from shared.deadletter import DeadLetters, RawRecord
from shared.envelope import Event, EventError, parse
from shared.events import EventKind
from shared.logging import causation_id, correlation_id
from shared.metrics import EVENTS_CONSUMED
from shared.publisher import Publisher
from shared.topics import Topics

log = logging.getLogger(__name__)

EventHandler = Callable[[Event], Awaitable[None]]
TombstoneHandler = Callable[[str], Awaitable[None]]
PROCESSED = "processed_events"
RECENT = 100_000
"""Event ids each consumer remembers in memory, to skip repeats without reading MongoDB."""
INFRASTRUCTURE_ERRORS = (ConnectionFailure, KafkaConnectionError, KafkaTimeoutError)


class PermanentError(Exception):
    """A handler's verdict that retrying this event cannot help: dead-letter it now."""


class IdempotentConsumer:
    """Runs handlers for one consumer group: dedupe, retry, dead-letter, then commit."""

    def __init__(
        self,
        *,
        db: AsyncDatabase[dict[str, Any]],
        publisher: Publisher,
        topics: Topics,
        group_id: str,
        attempts: int = 4,
        backoff: float = 0.2,
    ) -> None:
        self.processed = db[PROCESSED]
        self.markers = InsertBatcher(self.processed)
        self.dead_letters = DeadLetters(publisher, db)
        self.topics = topics
        self.group_id = group_id
        self.topics_read: list[str] = []
        self.attempts = attempts
        self.backoff = backoff
        self._recent: OrderedDict[str, None] = OrderedDict()

    def subscribe(
        self,
        broker: KafkaBroker,
        kind: EventKind,
        handler: EventHandler,
        *,
        on_tombstone: TombstoneHandler | None = None,
        concurrency: int = 1,
    ) -> None:
        """Register a FastStream subscriber for `kind` that runs `handler` once per event.

        With `concurrency` above 1, records are fetched in batches (`getmany`) and up to that
        many are handled at once; one client's events (one key) still run one after another,
        in order. The batch is committed when all are done, or rewound as a whole.
        """

        async def on_record(record: RawRecord) -> None:
            await self.process(record, kind, handler, on_tombstone)

        if concurrency == 1:
            self.subscribe_records(broker, self.topics.name(kind), on_record)
            return

        async def on_batch(records: list[RawRecord]) -> None:
            gate = asyncio.Semaphore(concurrency)
            lanes: dict[tuple[int, bytes | None], list[RawRecord]] = {}
            for record in records:
                lanes.setdefault((record.partition, record.key), []).append(record)

            async def run(lane: list[RawRecord]) -> None:
                for record in lane:
                    async with gate:
                        await on_record(record)

            await asyncio.gather(*(run(lane) for lane in lanes.values()))

        self.subscribe_records(broker, self.topics.name(kind), on_batch, batch=concurrency * 4)

    def subscribe_records(
        self, broker: KafkaBroker, topic: str, handler: Any, *, batch: int = 0
    ) -> None:
        """A subscriber of this group that hands `handler` each record as it came (raw bytes),
        or with `batch` lists of up to that many, committing once the handler returns."""

        async def raw_body(message: StreamMessage[Any]) -> Any:
            return message.body

        async def on_message(message: KafkaMessage) -> None:
            raw = message.raw_message
            records = [
                RawRecord(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers or []))
                for r in (raw if isinstance(raw, tuple) else (raw,))
            ]
            await handler(records if batch else records[0])

        self.topics_read.append(topic)
        options: dict[str, Any] = {
            "group_id": self.group_id,
            "auto_offset_reset": "earliest",
            "ack_policy": AckPolicy.NACK_ON_ERROR,
            "decoder": raw_body,
            "title": f"{self.group_id}:{topic.removeprefix(self.topics.prefix)}",
        }
        if batch:
            broker.subscriber(topic, batch=True, max_records=batch, **options)(on_message)
        else:
            broker.subscriber(topic, **options)(on_message)

    async def ensure_indexes(self) -> None:
        """`_id` is unique already; the TTL-free record is small (id, group, when)."""
        await self.processed.create_index("processed_at")

    async def process(
        self,
        record: RawRecord,
        kind: EventKind,
        handler: EventHandler,
        on_tombstone: TombstoneHandler | None = None,
    ) -> str:
        """Handle one record; the outcome label, or raise to have the record redelivered."""
        if record.value is None:
            if on_tombstone is not None and record.key is not None:
                await on_tombstone(record.key.decode())
            return self._count(record, "tombstone")
        try:
            event = parse(record.value, prefix=self.topics.prefix)
            if event.kind is not kind:
                raise EventError(f"a {event.kind.value} event on the {kind.value} topic")
        except EventError as exc:
            await self.dead_letter(record, exc, attempts=0)
            return self._count(record, "dead_lettered")
        marker = f"{self.group_id}:{event.id}"
        if marker in self._recent:
            return self._count(record, "duplicate")
        correlation_id.set(event.correlation_id)
        causation_id.set(event.id)
        with tracing.consuming(
            record.topic,
            event_id=event.id,
            trace=event.trace,
            group=self.group_id,
            partition=record.partition,
        ) as span:
            handled = await self._run(handler, event, record)
            if not handled and span is not None:
                span.set_status(Status(StatusCode.ERROR, "dead-lettered"))
        if not handled:
            return self._count(record, "dead_lettered")
        self._remember(marker)
        stored = {"_id": marker, "group": self.group_id, "processed_at": datetime.now(UTC)}
        if not await self.markers.insert(stored):
            return self._count(record, "duplicate")  # applied before: its effects held still
        return self._count(record, "processed")

    def _remember(self, marker: str) -> None:
        self._recent[marker] = None
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    async def _run(self, handler: EventHandler, event: Event, record: RawRecord) -> bool:
        """Run with retries; False once the event went to the DLQ."""
        for attempt in range(1, self.attempts + 1):
            try:
                await handler(event)
                return True
            except INFRASTRUCTURE_ERRORS:
                await asyncio.sleep(self.backoff * 4)
                raise
            except PermanentError as exc:
                await self.dead_letter(record, exc, attempts=attempt)
                return False
            except Exception as exc:
                if attempt == self.attempts:
                    await self.dead_letter(record, exc, attempts=attempt)
                    return False
                log.warning(
                    "handling %s %s failed (attempt %d): %s",
                    event.kind.value, event.id, attempt, type(exc).__name__,
                )  # fmt: skip
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
        return False

    async def dead_letter(self, record: RawRecord, error: Exception, *, attempts: int) -> None:
        """Copy the record to `<topic>.dlq` with the error and its origin in headers."""
        await self.dead_letters.send(record, error, group=self.group_id, attempts=attempts)

    def _count(self, record: RawRecord, outcome: str) -> str:
        EVENTS_CONSUMED.labels(record.topic, self.group_id, outcome).inc()
        return outcome
