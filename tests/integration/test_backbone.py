"""The messaging backbone against the real Kafka broker and the real MongoDB-wire server."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from faststream.kafka import KafkaBroker
from prometheus_client import REGISTRY
from pymongo.asynchronous.database import AsyncDatabase

from shared.consumer import IdempotentConsumer, PermanentError
from shared.envelope import Event, Record, build, follow
from shared.events import EventKind, ScreeningPassed
from shared.examples import EXAMPLES
from shared.locks import Locks
from shared.logging import JsonFormatter, TracingFilter
from shared.outbox import OutboxRelay, ensure_outbox_index, push_outbox, with_outbox
from shared.publisher import KafkaPublisher, send_record
from shared.topics import Topics, ensure_topics
from tests.conftest import Servers
from tests.support import eventually, read_topic

pytestmark = pytest.mark.integration

Db = AsyncDatabase[dict[str, Any]]


def passed_event(client_id: str = "c-1") -> ScreeningPassed:
    example = EXAMPLES[EventKind.SCREENING_PASSED]
    assert isinstance(example, ScreeningPassed)
    return example.model_copy(update={"screening_id": uuid.uuid4(), "client_id": client_id})


def consumed(topic: str, group: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "clinicflow_events_consumed_total", {"topic": topic, "group": group, "outcome": outcome}
    )
    return value or 0.0


class Counting:
    """A handler that records how often each event id was applied, in MongoDB."""

    def __init__(self, db: Db) -> None:
        self.effects = db["effects"]

    async def __call__(self, event: Event) -> None:
        await self.effects.update_one({"_id": event.id}, {"$inc": {"n": 1}}, upsert=True)

    async def counts(self) -> dict[str, int]:
        return {d["_id"]: d["n"] async for d in self.effects.find({})}


async def run_consumer(
    servers: Servers,
    consumer: IdempotentConsumer,
    handler: Callable[[Event], Awaitable[None]],
    kind: EventKind = EventKind.SCREENING_PASSED,
) -> KafkaBroker:
    broker = KafkaBroker(servers.kafka_bootstrap_servers)
    consumer.subscribe(broker, kind, handler)
    await broker.start()
    return broker


async def test_outbox_entries_are_published_once_in_order(
    servers: Servers, db: Db, topics: Topics, publisher: KafkaPublisher, locks: Locks
) -> None:
    aggregates = db["aggregates"]
    await ensure_outbox_index(aggregates)
    first = build(passed_event(), source="intake", prefix=topics.prefix)
    contact = build(EXAMPLES[EventKind.CLIENT_CONTACT], source="intake", prefix=topics.prefix)
    second = build(passed_event(), source="intake", prefix=topics.prefix)
    await aggregates.insert_one(with_outbox({"_id": "agg-1", "state": "new"}, [first, contact]))
    await aggregates.update_one(
        {"_id": "agg-1"}, push_outbox({"$set": {"state": "changed"}}, [second])
    )

    relay = OutboxRelay([aggregates], publisher, locks)
    assert await relay.drain() == 3
    assert await relay.drain() == 0

    passed = await read_topic(
        servers.kafka_bootstrap_servers, topics.name(EventKind.SCREENING_PASSED), expect=2
    )
    assert [json.loads(r.value)["id"] for r in passed] == [first.event_id, second.event_id]
    assert all(r.key == b"c-1" for r in passed)
    assert dict(passed[0].headers) == {"content-type": b"application/cloudevents+json"}
    contacts = await read_topic(
        servers.kafka_bootstrap_servers, topics.name(EventKind.CLIENT_CONTACT), expect=1
    )
    assert [json.loads(r.value)["id"] for r in contacts] == [contact.event_id]
    stored = await aggregates.find_one({"_id": "agg-1"})
    assert stored is not None
    assert (stored["state"], stored["outbox"], stored["outbox_pending"]) == ("changed", [], False)


async def test_tombstones_go_out_with_a_null_value(
    servers: Servers, db: Db, topics: Topics, publisher: KafkaPublisher, locks: Locks
) -> None:
    from shared.envelope import tombstone

    aggregates = db["clients"]
    erase = tombstone(EventKind.CLIENT_CONTACT, "c-erased", prefix=topics.prefix)
    await aggregates.insert_one(with_outbox({"_id": "c-erased"}, [erase]))
    assert await OutboxRelay([aggregates], publisher, locks).drain() == 1
    records = await read_topic(
        servers.kafka_bootstrap_servers, topics.name(EventKind.CLIENT_CONTACT), expect=1
    )
    assert [(r.key, r.value) for r in records] == [(b"c-erased", None)]


class RelayCrashed(BaseException):
    """Stands for the process dying: nothing after it runs, so the lease is not released."""


class CrashAfterPublish(OutboxRelay):
    """A relay that dies after Kafka acknowledged the records and before marking them sent."""

    async def mark_sent(
        self, collection: Any, aggregate_id: Any, sent: list[Any], *, remaining: list[Any]
    ) -> None:
        raise RelayCrashed


async def test_relay_crash_between_publish_and_mark_duplicates_and_consumer_skips(
    servers: Servers, db: Db, topics: Topics, publisher: KafkaPublisher, locks: Locks
) -> None:
    aggregates = db["aggregates"]
    record = build(passed_event(), source="intake", prefix=topics.prefix)
    await aggregates.insert_one(with_outbox({"_id": "agg-crash"}, [record]))

    with pytest.raises(RelayCrashed):
        await CrashAfterPublish([aggregates], publisher, locks, lease=timedelta(seconds=1)).drain()
    survivor = OutboxRelay([aggregates], publisher, locks)
    assert await survivor.drain() == 0, "the dead relay's lease must hold until it expires"
    await asyncio.sleep(1.2)
    assert await survivor.drain() == 1

    topic = topics.name(EventKind.SCREENING_PASSED)
    records = await read_topic(servers.kafka_bootstrap_servers, topic, expect=2)
    assert [json.loads(r.value)["id"] for r in records] == [record.event_id] * 2

    handler = Counting(db)
    group = f"{topics.prefix}g-crash"
    consumer = IdempotentConsumer(db=db, publisher=publisher, topics=topics, group_id=group)
    broker = await run_consumer(servers, consumer, handler)
    try:
        await eventually(lambda: _async(consumed(topic, group, "duplicate") == 1))
    finally:
        await broker.stop()
    assert await handler.counts() == {record.event_id: 1}
    assert consumed(topic, group, "processed") == 1


async def _async(value: bool) -> bool:
    return value


async def test_poison_messages_go_to_the_dlq_and_the_partition_moves_on(
    servers: Servers, db: Db, topics: Topics, publisher: KafkaPublisher, locks: Locks
) -> None:
    topic = topics.name(EventKind.SCREENING_PASSED)
    good = [build(passed_event("c-same"), source="intake", prefix=topics.prefix) for _ in range(3)]
    wrong_data = json.loads(good[0].value or b"")
    wrong_data["id"] = str(uuid.uuid4())
    del wrong_data["data"]["severity"]
    await send_record(publisher, good[0])
    await publisher.send(topic, b"{this is not json", key=b"c-same", headers=[("trace", b"t1")])
    await send_record(publisher, good[1])
    await publisher.send(topic, json.dumps(wrong_data).encode(), key=b"c-same", headers=[])
    await send_record(publisher, good[2])

    handler = Counting(db)
    group = f"{topics.prefix}g-poison"
    consumer = IdempotentConsumer(db=db, publisher=publisher, topics=topics, group_id=group)
    broker = await run_consumer(servers, consumer, handler)
    try:
        await eventually(lambda: _count_is(handler, 3))
    finally:
        await broker.stop()
    assert await handler.counts() == {r.event_id: 1 for r in good}

    dead = await read_topic(servers.kafka_bootstrap_servers, f"{topic}.dlq", expect=2)
    assert dead[0].value == b"{this is not json"
    first, second = (dict(r.headers) for r in dead)
    assert first["dlq-original-topic"] == topic.encode()
    assert first["dlq-consumer-group"] == group.encode()
    assert first["dlq-error"].startswith(b"value is not JSON")
    assert first["trace"] == b"t1", "the original headers travel with the dead letter"
    assert int(second["dlq-original-offset"]) == int(first["dlq-original-offset"]) + 2
    assert first["dlq-original-partition"] == second["dlq-original-partition"]
    assert b"severity" in second["dlq-error"]
    assert all(r.key == b"c-same" for r in dead)


async def _count_is(handler: Counting, n: int) -> bool:
    return len(await handler.counts()) >= n


async def test_failing_handler_is_retried_then_dead_lettered(
    servers: Servers, db: Db, topics: Topics, publisher: KafkaPublisher, locks: Locks
) -> None:
    topic = topics.name(EventKind.SCREENING_PASSED)
    flaky = build(passed_event("c-flaky"), source="intake", prefix=topics.prefix)
    broken = build(passed_event("c-broken"), source="intake", prefix=topics.prefix)
    refused = build(passed_event("c-refused"), source="intake", prefix=topics.prefix)
    fine = build(passed_event("c-fine"), source="intake", prefix=topics.prefix)
    attempts: dict[str, int] = {}
    effects = Counting(db)

    async def handler(event: Event) -> None:
        attempts[event.id] = attempts.get(event.id, 0) + 1
        if event.id == broken.event_id:
            raise RuntimeError("downstream keeps failing")
        if event.id == refused.event_id:
            raise PermanentError("this event can never be applied")
        if event.id == flaky.event_id and attempts[event.id] == 1:
            raise RuntimeError("a passing hiccup")
        await effects(event)

    for record in (flaky, broken, refused, fine):
        await send_record(publisher, record)
    group = f"{topics.prefix}g-retry"
    consumer = IdempotentConsumer(
        db=db, publisher=publisher, topics=topics, group_id=group, attempts=3, backoff=0.01
    )
    broker = await run_consumer(servers, consumer, handler)
    try:
        await eventually(lambda: _count_is(effects, 2))
        dead = await read_topic(servers.kafka_bootstrap_servers, f"{topic}.dlq", expect=2)
    finally:
        await broker.stop()
    assert await effects.counts() == {flaky.event_id: 1, fine.event_id: 1}
    assert attempts == {
        flaky.event_id: 2,
        broken.event_id: 3,
        refused.event_id: 1,
        fine.event_id: 1,
    }
    by_id = {json.loads(r.value)["id"]: dict(r.headers) for r in dead}
    assert set(by_id) == {broken.event_id, refused.event_id}
    assert by_id[broken.event_id]["dlq-attempts"] == b"3"
    assert by_id[broken.event_id]["dlq-error"] == b"downstream keeps failing"
    assert by_id[refused.event_id]["dlq-error-type"] == b"PermanentError"


async def test_consumer_restarted_mid_stream_loses_nothing_and_repeats_nothing(
    servers: Servers, db: Db, topics: Topics, publisher: KafkaPublisher, locks: Locks
) -> None:
    first_half = [
        build(passed_event(f"c-{i}"), source="intake", prefix=topics.prefix) for i in range(10)
    ]
    second_half = [
        build(passed_event(f"c-{i}"), source="intake", prefix=topics.prefix) for i in range(10)
    ]
    handler = Counting(db)
    group = f"{topics.prefix}g-restart"

    def new_consumer() -> IdempotentConsumer:
        return IdempotentConsumer(db=db, publisher=publisher, topics=topics, group_id=group)

    for record in first_half:
        await send_record(publisher, record)
    broker = await run_consumer(servers, new_consumer(), handler)
    try:
        await eventually(lambda: _count_is(handler, 10))
    finally:
        await broker.stop()
    for record in second_half:
        await send_record(publisher, record)
    broker = await run_consumer(servers, new_consumer(), handler)
    try:
        await eventually(lambda: _count_is(handler, 20))
        await asyncio.sleep(1)
    finally:
        await broker.stop()
    counts = await handler.counts()
    assert counts == {r.event_id: 1 for r in first_half + second_half}


async def test_topics_are_created_once_with_compaction_and_dlqs(
    servers: Servers, topic_prefix: str
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(servers.kafka_bootstrap_servers, topics, partitions=2)
    await ensure_topics(servers.kafka_bootstrap_servers, topics, partitions=2)
    admin = AIOKafkaAdminClient(bootstrap_servers=servers.kafka_bootstrap_servers)
    await admin.start()
    try:
        names = set(await admin.list_topics())
        for kind in EventKind:
            assert {topics.name(kind), topics.dlq(kind)} <= names
        described = await admin.describe_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, topics.name(EventKind.SITE_UPDATED)),
                ConfigResource(ConfigResourceType.TOPIC, topics.name(EventKind.CLIENT_CONTACT)),
                ConfigResource(ConfigResourceType.TOPIC, topics.name(EventKind.SESSION_COMPLETED)),
            ]
        )
        policies = {
            resource[3]: {entry[0]: entry[1] for entry in resource[4]}["cleanup.policy"]
            for response in described
            for resource in response.resources
        }
        assert policies == {
            topics.name(EventKind.SITE_UPDATED): "compact",
            topics.name(EventKind.CLIENT_CONTACT): "compact",
            topics.name(EventKind.SESSION_COMPLETED): "delete",
        }
        metadata = await admin.describe_topics([topics.name(EventKind.SESSION_COMPLETED)])
        assert len(metadata[0]["partitions"]) == 2
    finally:
        await admin.close()


async def test_log_lines_and_caused_events_carry_the_workflow_ids(
    servers: Servers, db: Db, topics: Topics, publisher: KafkaPublisher, locks: Locks
) -> None:
    start = build(passed_event("c-traced"), source="intake", prefix=topics.prefix)
    lines: list[str] = []
    caused: list[Record] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    collector = Collect()
    collector.setFormatter(JsonFormatter("test"))
    collector.addFilter(TracingFilter())
    logger = logging.getLogger("tests.traced")
    logger.addHandler(collector)
    logger.setLevel(logging.INFO)

    async def handler(event: Event) -> None:
        logger.info("handling the screening")
        caused.append(
            follow(
                EXAMPLES[EventKind.SESSION_SCHEDULED],
                event,
                source="scheduler",
                prefix=topics.prefix,
            )
        )

    await send_record(publisher, start)
    group = f"{topics.prefix}g-trace"
    consumer = IdempotentConsumer(db=db, publisher=publisher, topics=topics, group_id=group)
    broker = await run_consumer(servers, consumer, handler)
    try:
        await eventually(lambda: _async(bool(caused)))
    finally:
        await broker.stop()
        logger.removeHandler(collector)
    line = json.loads(lines[0])
    assert line["correlationid"] == start.event_id
    assert line["causationid"] == start.event_id
    document = json.loads(caused[0].value or b"")
    assert document["correlationid"] == start.event_id
    assert document["causationid"] == start.event_id
    assert document["id"] != start.event_id
