"""The messaging backbone against the real Kafka broker and the real MongoDB-wire server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from faststream.kafka import KafkaBroker
from prometheus_client import REGISTRY
from pymongo.asynchronous.database import AsyncDatabase

from shared.aggregate import Aggregate
from shared.batching import InsertBatcher
from shared.consumer import IdempotentConsumer, PermanentError
from shared.envelope import Event, Record, build, follow
from shared.events import EventKind, ScreeningPassed
from shared.examples import EXAMPLES
from shared.locks import LeaseLost, Locks, LockTimeout
from shared.logging import JsonFormatter, TracingFilter
from shared.outbox import OutboxRelay, record_of
from shared.publisher import KafkaPublisher, send_record
from shared.topics import Topics, ensure_topics
from shared.uow import AggregateStore, UnitOfWork
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


class Tally(Aggregate):
    """A test aggregate: each `bump` changes it and records a passed screening."""

    tally_id: str
    count: int = 0

    def bump(self) -> uuid.UUID:
        self.count += 1
        return self.record(passed_event(), correlation=None, cause=None)


def tallies(db: Db) -> AggregateStore[Tally]:
    return AggregateStore(db["tallies"], Tally, "tally_id")


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[OutboxRelay]:
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        relay.stop()
        task.cancel()
        ended, _ = await asyncio.wait({task}, timeout=15)
        assert ended, "the relay did not stop"


def unit_of_work(db: Db, publisher: KafkaPublisher, locks: Locks, topics: Topics) -> UnitOfWork:
    relay = OutboxRelay([db["tallies"]], publisher, locks, sweep_interval=0.2)
    return UnitOfWork(locks, relay, source="intake", prefix=topics.prefix)


async def test_a_change_commits_state_and_events_together_and_publishes_them_in_order(
    servers: Servers, db: Db, topics: Topics, publisher: KafkaPublisher, locks: Locks
) -> None:
    uow = unit_of_work(db, publisher, locks, topics)
    store = tallies(db)
    contact = build(EXAMPLES[EventKind.CLIENT_CONTACT], source="intake", prefix=topics.prefix)
    async with running(uow.relay):
        fresh = Tally(tally_id="t-1")
        first = fresh.bump()
        fresh.attach(contact)
        assert await uow.add(store, fresh)
        assert not await uow.add(store, Tally(tally_id="t-1")), "an existing id is not replaced"
        async with uow.change(store, "t-1") as tally:
            assert tally is not None
            second = tally.bump()
        before = await store.collection.find_one({"_id": "t-1"})
        async with uow.change(store, "t-1") as tally:
            assert tally is not None  # reads, changes nothing: nothing is written

        passed = await read_topic(
            servers.kafka_bootstrap_servers, topics.name(EventKind.SCREENING_PASSED), expect=2
        )
        assert [json.loads(r.value)["id"] for r in passed] == [str(first), str(second)]
        assert all(r.key == b"c-1" for r in passed)
        assert dict(passed[0].headers) == {"content-type": b"application/cloudevents+json"}
        contacts = await read_topic(
            servers.kafka_bootstrap_servers, topics.name(EventKind.CLIENT_CONTACT), expect=1
        )
        assert [json.loads(r.value)["id"] for r in contacts] == [contact.event_id]
        stored = await store.collection.find_one({"_id": "t-1"})
        assert stored is not None
        assert before is not None
        assert stored["count"] == 2
        assert [e["id"] for e in stored["outbox"]] == [str(second)], "published ones are replaced"
        assert stored["updated_at"] == before["updated_at"], "an unchanged aggregate is not written"
        await eventually(lambda: _leases_left(locks, 0))


async def _leases_left(locks: Locks, expected: int) -> bool:
    return await locks.leases.count_documents({}) == expected


async def test_tombstones_go_out_with_a_null_value(
    servers: Servers, db: Db, topics: Topics, publisher: KafkaPublisher, locks: Locks
) -> None:
    from shared.envelope import tombstone

    uow = unit_of_work(db, publisher, locks, topics)
    erased = Tally(tally_id="c-erased")
    erased.attach(tombstone(EventKind.CLIENT_CONTACT, "c-erased", prefix=topics.prefix))
    async with running(uow.relay):
        assert await uow.add(tallies(db), erased)
        records = await read_topic(
            servers.kafka_bootstrap_servers, topics.name(EventKind.CLIENT_CONTACT), expect=1
        )
    assert [(r.key, r.value) for r in records] == [(b"c-erased", None)]


class RelayCrashed(BaseException):
    """Stands for the process dying: nothing after it runs, so the lease is not released."""


class DiesBeforeRelease(OutboxRelay):
    """A relay whose process dies once Kafka acknowledged the records, before releasing."""

    async def publish_queued(self) -> int:
        await self.publisher.send_many([record_of(e) for h in self._queue for e in h.outbox])
        raise RelayCrashed


async def test_a_relay_that_dies_after_publishing_loses_nothing_and_consumers_skip_repeats(
    servers: Servers, db: Db, topics: Topics, publisher: KafkaPublisher, locks: Locks
) -> None:
    """The dead relay's lease expires; the next writer of the aggregate carries its entries
    along with its own, and they are published again: a repeat the consumer skips."""
    short = Locks(db, ttl=timedelta(seconds=1))
    dead_relay = DiesBeforeRelease([db["tallies"]], publisher, short)
    dead = UnitOfWork(short, dead_relay, source="intake", prefix=topics.prefix)
    store = tallies(db)
    doomed = Tally(tally_id="t-crash")
    lost = doomed.bump()
    assert await dead.add(store, doomed)
    with pytest.raises(RelayCrashed):
        await dead_relay.publish_queued()

    survivor = unit_of_work(db, publisher, locks, topics)
    with pytest.raises(LockTimeout):
        async with survivor.change(store, "t-crash", wait=0):
            pass  # the dead relay's lease holds until it expires
    await asyncio.sleep(1.2)
    async with survivor.change(store, "t-crash") as tally:
        assert tally is not None
        later = tally.bump()
    stored = await store.collection.find_one({"_id": "t-crash"})
    assert stored is not None
    assert [e["id"] for e in stored["outbox"]] == [str(lost), str(later)]
    async with running(survivor.relay):
        await eventually(lambda: _leases_left(locks, 0))

    topic = topics.name(EventKind.SCREENING_PASSED)
    records = await read_topic(servers.kafka_bootstrap_servers, topic, expect=3)
    assert [json.loads(r.value)["id"] for r in records] == [str(lost), str(lost), str(later)]

    handler = Counting(db)
    group = f"{topics.prefix}g-crash"
    consumer = IdempotentConsumer(db=db, publisher=publisher, topics=topics, group_id=group)
    broker = await run_consumer(servers, consumer, handler)
    try:
        await eventually(lambda: _async(consumed(topic, group, "duplicate") == 1))
    finally:
        await broker.stop()
    assert await handler.counts() == {str(lost): 1, str(later): 1}
    assert consumed(topic, group, "processed") == 2


async def test_the_sweep_publishes_what_a_dead_writer_left(
    servers: Servers, db: Db, topics: Topics, publisher: KafkaPublisher, locks: Locks
) -> None:
    """Nobody writes the aggregate again: the relay's sweep finds the expired lease itself."""
    short = Locks(db, ttl=timedelta(seconds=1))
    dead = UnitOfWork(short, OutboxRelay([], publisher, short), source="x", prefix=topics.prefix)
    orphan = Tally(tally_id="t-orphan")
    left = orphan.bump()
    assert await dead.add(tallies(db), orphan)
    async with running(unit_of_work(db, publisher, locks, topics).relay):
        records = await read_topic(
            servers.kafka_bootstrap_servers, topics.name(EventKind.SCREENING_PASSED), expect=1
        )
        await eventually(lambda: _leases_left(locks, 0))
    assert [json.loads(r.value)["id"] for r in records] == [str(left)]


async def test_a_stopped_relay_ends_without_being_cancelled(
    db: Db, publisher: KafkaPublisher, locks: Locks, topics: Topics
) -> None:
    """Shutdown does not depend on a cancellation arriving: one that a library swallows
    left a relay looping for ever (CI run of 2026-11-27)."""
    relay = unit_of_work(db, publisher, locks, topics).relay
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.5)
    relay.stop()
    ended, _ = await asyncio.wait({task}, timeout=5)
    assert ended, "the relay kept running"


async def test_a_writer_that_stalled_past_its_lease_neither_writes_nor_publishes(
    servers: Servers, db: Db, topics: Topics, publisher: KafkaPublisher
) -> None:
    """Two replicas, one paused mid-change past its lease: the one that took over wins, and
    the paused one's change is refused instead of overwriting it (issue 12)."""
    ttl = timedelta(milliseconds=500)
    stalled_locks, heir_locks = Locks(db, ttl=ttl), Locks(db, ttl=ttl)
    stalled = UnitOfWork(
        stalled_locks, OutboxRelay([db["tallies"]], publisher, stalled_locks),
        source="intake", prefix=topics.prefix,
    )  # fmt: skip
    heir = UnitOfWork(
        heir_locks, OutboxRelay([db["tallies"]], publisher, heir_locks),
        source="intake", prefix=topics.prefix,
    )  # fmt: skip
    store = tallies(db)
    assert await heir.add(store, Tally(tally_id="t-contended"))
    winner: list[uuid.UUID] = []

    async def take_over() -> None:
        await asyncio.sleep(0.7)
        async with heir.change(store, "t-contended", wait=2) as tally:
            assert tally is not None
            winner.append(tally.bump())

    async def change_and_stall() -> None:
        other = asyncio.create_task(take_over())
        async with stalled.change(store, "t-contended") as tally:
            assert tally is not None
            tally.bump()
            await other  # paused here, past the lease, while the heir changes it

    async with running(stalled.relay), running(heir.relay):
        with pytest.raises(LeaseLost):
            await change_and_stall()
        records = await read_topic(
            servers.kafka_bootstrap_servers, topics.name(EventKind.SCREENING_PASSED), expect=1
        )
    assert [json.loads(r.value)["id"] for r in records] == [str(winner[0])]
    stored = await store.collection.find_one({"_id": "t-contended"})
    assert stored is not None
    assert stored["count"] == 1


async def test_an_entry_kafka_refuses_is_kept_aside_and_publishing_goes_on(
    servers: Servers, db: Db, topics: Topics, publisher: KafkaPublisher, locks: Locks
) -> None:
    """One record larger than Kafka takes must not hold back every other change (issue 12)."""
    uow = unit_of_work(db, publisher, locks, topics)
    store = tallies(db)
    huge = build(EXAMPLES[EventKind.CLIENT_CONTACT], source="intake", prefix=topics.prefix)
    huge = dataclasses.replace(huge, value=b'{"pad": "' + b"x" * 2_000_000 + b'"}')
    async with running(uow.relay):
        poisoned = Tally(tally_id="t-poisoned")
        before = poisoned.bump()
        poisoned.attach(huge)
        after = poisoned.bump()
        assert await uow.add(store, poisoned)
        healthy = Tally(tally_id="t-healthy")
        other = healthy.bump()
        assert await uow.add(store, healthy)
        await eventually(lambda: _leases_left(locks, 0))  # released: published or kept aside
        records = await read_topic(
            servers.kafka_bootstrap_servers, topics.name(EventKind.SCREENING_PASSED), expect=3
        )
    published = {json.loads(r.value)["id"] for r in records}  # repeats allowed: ids dedupe
    assert published == {str(i) for i in (before, after, other)}
    kept = await db["outbox_dead_letters"].find_one({"_id": huge.event_id})
    assert kept is not None
    assert kept["resource"] == "tallies:t-poisoned"
    assert kept["error"].startswith("MessageSizeTooLargeError")
    assert kept["entry"]["topic"] == topics.name(EventKind.CLIENT_CONTACT)


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


async def test_a_record_too_large_to_copy_to_the_dlq_does_not_stop_its_partition(
    servers: Servers, db: Db, topics: Topics, publisher: KafkaPublisher
) -> None:
    """A value just under Kafka's limit cannot be copied with the `dlq-*` headers on top: the
    DLQ gets a stand-in, the original bytes are kept, and the records behind it are handled."""
    topic = topics.name(EventKind.SCREENING_PASSED)
    huge = b"x" * 1_048_300  # not JSON, and no room left for the DLQ's headers
    await publisher.send(topic, huge, key=b"c-big", headers=[])
    after = build(passed_event("c-big"), source="intake", prefix=topics.prefix)
    await send_record(publisher, after)

    handler = Counting(db)
    group = f"{topics.prefix}g-huge"
    consumer = IdempotentConsumer(db=db, publisher=publisher, topics=topics, group_id=group)
    broker = await run_consumer(servers, consumer, handler)
    try:
        await eventually(lambda: _count_is(handler, 1))
    finally:
        await broker.stop()
    assert await handler.counts() == {after.event_id: 1}
    [dead] = await read_topic(servers.kafka_bootstrap_servers, f"{topic}.dlq", expect=1)
    headers = dict(dead.headers)
    assert headers["dlq-value-omitted"] == b"true"
    assert json.loads(dead.value)["size"] == len(huge)
    kept = await db["dead_letter_values"].find_one({"_id": headers["dlq-value-stored-as"].decode()})
    assert kept is not None
    assert kept["value"] == huge


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


async def test_concurrent_inserts_are_sent_together_and_each_caller_gets_its_own_answer(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    """Group commit: inserts that wait behind one in flight leave as one `insert_many`, and a
    duplicate `_id` is False for its caller only."""
    commands: list[int] = []

    class Counting(InsertBatcher):
        async def _write(self, items: list[dict[str, Any]]) -> list[bool | Exception]:
            commands.append(len(items))
            return await super()._write(items)

    await db["notes"].insert_one({"_id": "taken"})
    inserts = Counting(db["notes"])
    ids = [f"n{i}" for i in range(40)] + ["taken", "n3"]
    answers = await asyncio.gather(*(inserts.insert({"_id": i}) for i in ids))
    assert answers == [True] * 40 + [False, False]
    assert sum(commands) == len(ids)
    assert len(commands) < len(ids) / 4
    stored = {doc["_id"] async for doc in db["notes"].find({})}
    assert stored == {"taken", *ids[:40]}
    assert await inserts.insert_all([{"_id": "n0"}, {"_id": "fresh"}]) == [False, True]
