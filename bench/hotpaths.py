"""Per-operation cost of each hot path with 1,000 and with 100,000 documents stored beside it.

Each hot path runs against the real stores and unit of work on the bench's FerretDB, in a
scratch database, with Kafka replaced by a publisher that drops records: what is measured is
what the stored history costs, which is where FerretDB v1 differs from MongoDB. The history is
what a year of use leaves: finished aftercare steps, finished plans, processed-event markers.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from bench.report import HotpathContext, Row
from services.notifier.adapters.store import NotifierStore
from services.notifier.domain.steps import Step
from services.notifier.handlers import NotifierContext, release_due_steps
from services.scheduler.adapters.rooms import Rooms
from services.scheduler.desk import SEARCH_WINDOW
from services.scheduler.domain.rooms import Block, RoomDay, day_id
from shared.consumer import IdempotentConsumer
from shared.deadletter import RawRecord
from shared.envelope import Event, Record, build
from shared.events import EventKind
from shared.examples import EXAMPLES
from shared.ids import Ids
from shared.locks import Locks
from shared.outbox import Handoff, OutboxRelay
from shared.topics import Topics
from shared.uow import UnitOfWork
from shared.vocabulary import AftercareStep, Locale

Db = AsyncDatabase[dict[str, Any]]
TARGET = 1.5
FILL_BATCH = 1000


class DroppingPublisher:
    """Kafka's share of each path is constant; leaving it out shows what storage costs."""

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None,
                   headers: list[tuple[str, bytes]]) -> None:  # fmt: skip
        return None

    async def send_many(self, records: list[Record]) -> None:
        return None


async def fill(db: Db, collection: str, count: int, make: Callable[[int], dict[str, Any]]) -> None:
    """Store `count` documents of history (in batches: FerretDB takes ~2,000 inserts/s)."""
    for start in range(0, count, FILL_BATCH):
        batch = [make(n) for n in range(start, min(count, start + FILL_BATCH))]
        await db[collection].insert_many(batch, ordered=False)


async def per_op(step: Callable[[int], Awaitable[object]], runs: int) -> float:
    """Median seconds of one call over `runs` calls (after one warm-up call)."""
    await step(-1)
    times = []
    for n in range(runs):
        started = time.perf_counter()
        await step(n)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def _step(n: int, *, due: datetime, status: str = "delivered") -> dict[str, Any]:
    step = Step(
        aftercare_id=str(uuid.uuid4()), client_id=f"c-{n:012d}", site_id="paris-01",
        plan_id=str(uuid.uuid4()), session_id=str(uuid.uuid4()), step=AftercareStep.DAY_3,
        due_at=due, status=status, locale=Locale.EN, title="Day 3",
        instructions=["Keep the area clean."], correlation_id=str(uuid.uuid4()),
        cause_id=str(uuid.uuid4()), created_at=due,
    )  # fmt: skip
    return {"_id": step.aftercare_id, **step.model_dump(mode="python")} | {"outbox": []}


def _unit_of_work(db: Db, *collections: str) -> tuple[UnitOfWork, OutboxRelay]:
    locks = Locks(db)
    relay = OutboxRelay([db[name] for name in collections], DroppingPublisher(), locks)
    return UnitOfWork(locks, relay, source="bench", prefix="bench."), relay


async def timers(db: Db, stored: int, runs: int) -> float:
    """One timer round releasing one due step, with `stored` finished steps in history."""
    now = datetime.now(UTC)
    await fill(db, "aftercare_steps_history", stored, lambda n: _step(n, due=now))
    uow, relay = _unit_of_work(db, "aftercare_steps")
    ctx = NotifierContext(
        store=NotifierStore(db), uow=uow, contacts={}, sites={}, channels=[],
        webhooks=None, secrets=None, ids=Ids(b"bench-secret-0123456789"),  # type: ignore[arg-type]
        batch=1,
    )  # fmt: skip
    relaying = asyncio.create_task(relay.run())

    async def release(_: int) -> float:
        await db["aftercare_steps"].insert_one(_step(0, due=now, status="scheduled"))
        started = time.perf_counter()
        assert await release_due_steps(ctx) == 1
        return time.perf_counter() - started

    try:
        return await _timed_part(release, runs)
    finally:
        relay.stop()
        relaying.cancel()


async def _timed_part(step: Callable[[int], Awaitable[float]], runs: int) -> float:
    """Like `per_op`, for steps that set up first and return the time of their own part."""
    await step(-1)
    times = sorted([await step(n) for n in range(runs)])
    return times[len(times) // 2]


async def room_search(db: Db, stored: int, runs: int) -> float:
    """The free-room search of one booking (a round of days), with `stored` finished plans."""
    await fill(db, "plans_history", stored, lambda n: {"_id": str(uuid.uuid4()), "n": n})
    uow, _ = _unit_of_work(db, "room_days")
    rooms = Rooms(db, uow)
    today = date.today()
    days = []
    for offset in range(180):  # the booking horizon, busy: what room_days holds by design
        day = today + timedelta(days=offset)
        start = datetime(day.year, day.month, day.day, 9, tzinfo=UTC)
        blocks = [
            Block(room=1 + k % 3, starts_at=start + timedelta(hours=k // 3),
                  ends_at=start + timedelta(hours=k // 3 + 1), session_id=uuid.uuid4(),
                  token=uuid.uuid4().hex)
            for k in range(24)
        ]  # fmt: skip
        room_day = RoomDay(day_id=day_id("paris-01", day), site_id="paris-01", day=day,
                           blocks=blocks)  # fmt: skip
        days.append({"_id": room_day.day_id, **rooms.days.dump(room_day)})
    await db["room_days"].insert_many(days)
    start = datetime.now(UTC) + timedelta(days=1)
    return await per_op(
        lambda _: rooms.busy("paris-01", "Europe/Paris", start, start + SEARCH_WINDOW), runs
    )


async def relay(db: Db, stored: int, runs: int) -> float:
    """Publishing one committed change and releasing its lease, with `stored` aggregates."""
    await fill(db, "plans", stored, lambda n: {"_id": str(uuid.uuid4()), "n": n, "outbox": []})
    locks = Locks(db)
    outbox_relay = OutboxRelay([db["plans"]], DroppingPublisher(), locks)
    record = build(EXAMPLES[EventKind.SESSION_SCHEDULED], source="bench", prefix="bench.")
    entry = {"id": record.event_id, "topic": record.topic, "key": record.key,
             "value": (record.value or b"").decode(), "headers": record.headers}  # fmt: skip

    async def publish(_: int) -> float:
        lease = await locks.acquire_new(f"plans:{uuid.uuid4()}")
        started = time.perf_counter()
        outbox_relay.submit(Handoff(lease, [entry]))
        await outbox_relay.publish_queued()
        return time.perf_counter() - started

    return await _timed_part(publish, runs)


async def markers(db: Db, stored: int, runs: int) -> float:
    """The idempotent consumer's check and record of one new event, with `stored` markers."""
    group = "bench.scheduler"
    await fill(
        db,
        "processed_events",
        stored,
        lambda n: {
            "_id": f"{group}:{uuid.uuid4()}",
            "group": group,
            "processed_at": datetime.now(UTC),
        },
    )
    consumer = IdempotentConsumer(db=db, publisher=DroppingPublisher(), topics=Topics("bench."),
                                  group_id=group)  # fmt: skip

    async def handle(_: Event) -> None:
        return None

    def raw(_: int) -> RawRecord:
        record = build(EXAMPLES[EventKind.SCREENING_PASSED], source="bench", prefix="bench.")
        headers = [(k, v.encode()) for k, v in record.headers.items()]
        return RawRecord(record.topic, 0, 0, record.key.encode(), record.value, headers)

    return await per_op(
        lambda n: consumer.process(raw(n), EventKind.SCREENING_PASSED, handle), runs
    )


PATHS = {
    "timers: release one due step": timers,
    "room search: the days of one search round": room_search,
    "relay: publish one change, release its lease": relay,
    "idempotency markers: check and record one event": markers,
}


async def run(context: HotpathContext) -> list[Row]:
    sizes = (1_000, 10_000) if context.quick else (1_000, 100_000)
    runs = 15 if context.quick else 30
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(context.mongodb_uri, tz_aware=True)
    rows = []
    try:
        for what, path in PATHS.items():
            costs = []
            for size in sizes:
                name = f"{context.scratch_database}_{size}"
                await mongo.drop_database(name)
                costs.append(await path(mongo[name], size, runs))
                await mongo.drop_database(name)
            small, large = costs
            ratio = large / small
            rows.append(Row(
                what=f"{what}, {sizes[1]:,} stored",
                value=f"{large * 1000:.2f} ms",
                baseline=f"{small * 1000:.2f} ms with {sizes[0]:,}",
                ratio=ratio, target=f"≤ {TARGET}", met=ratio <= TARGET,
            ))  # fmt: skip
            print(f"  {rows[-1].what}: {rows[-1].value}  [{rows[-1].baseline}]", flush=True)
    finally:
        await mongo.close()
    return rows
