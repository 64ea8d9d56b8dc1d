"""Benchmark 2: how fast the scheduler drains a backlog of passed screenings.

With the scheduler stopped (after it seeded the demo sites), 2,000 `screening_passed` events of
different clients are put on the topic; the scheduler is started again and every first booking
(`session_scheduled`, sequence 1) is timed as it is read. The rate runs from the first booking
read to the last, so the start-up of the process is not counted. The baseline is a raw aiokafka
consumer of a new group reading the same records with one `insert_one` each: the floor any
consumer writing to this FerretDB pays. Target: a quarter of it.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pymongo import AsyncMongoClient

from bench.report import Row, Section
from bench.stack import Bench
from bench.watch import BookingWatch
from scripts.stack import DEMO_SITES
from services.intake.domain.policy import DEFAULT_POLICY
from shared.envelope import build
from shared.events import EventKind, ScreeningPassed
from shared.topics import Topics
from shared.vocabulary import Area, Concern, Severity, SkinSensitivity

TARGET = 0.25
WHAT = "scheduler drain of {count:,} screening_passed"


async def produce(kafka: str, prefix: str, count: int) -> list[str]:
    """`count` passed screenings of new clients at the demo sites; their client ids."""
    now = datetime.now(UTC)
    clients = [f"bench-{uuid.uuid4().hex[:12]}" for _ in range(count)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
    await producer.start()
    try:
        for n, client in enumerate(clients):
            passed = ScreeningPassed(
                screening_id=uuid.uuid4(),
                client_id=client,
                site_id=DEMO_SITES[n % len(DEMO_SITES)],
                areas=[Area.FACE],
                concerns=[Concern.ACNE_SCARS],
                severity=Severity.SEVERE,
                skin_sensitivity=SkinSensitivity.NORMAL,
                policy_version=DEFAULT_POLICY.version,
                screened_at=now,
                valid_until=now + timedelta(days=90),
            )
            record = build(passed, source="intake", prefix=prefix)
            await producer.send(
                record.topic,
                record.value,
                key=record.key.encode(),
                headers=[(k, v.encode()) for k, v in record.headers.items()],
            )
        await producer.flush()
    finally:
        await producer.stop()
    return clients


async def raw_consumer(bench: Bench, topic: str, count: int, within: float) -> list[float]:
    """When each of `count` records was read and inserted by a plain consumer (monotonic)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bench.kafka,
        group_id=f"bench-raw-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(bench.mongodb_uri, tz_aware=True)
    collection = mongo["bench_drain_raw"]["records"]
    done: list[float] = []
    deadline = time.monotonic() + within
    await consumer.start()
    try:
        while len(done) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    document = json.loads(record.value)
                    await collection.insert_one({"_id": document.pop("id"), **document})
                    done.append(time.monotonic())
            if batch:
                await consumer.commit()
    finally:
        await consumer.stop()
        await mongo.drop_database("bench_drain_raw")
        await mongo.close()
    return done


def rate(times: list[float]) -> float | None:
    """Items per second from the first to the last (None below two items)."""
    ordered = sorted(times)
    if len(ordered) < 2 or ordered[-1] == ordered[0]:
        return None
    return (len(ordered) - 1) / (ordered[-1] - ordered[0])


async def run(bench: Bench) -> Section:
    count, timeout = (200, 60.0) if bench.quick else (2000, 180.0)
    what = WHAT.format(count=count)
    if not bench.private:
        return Section("drain", [Row(what, "skipped: needs its own stack (no --use-running)")])
    async with bench.services("drain", ["scheduler"]) as stack:
        topics = Topics(stack.prefix)
        await stack.stop("scheduler")
        async with BookingWatch(bench.kafka, topics.name(EventKind.SESSION_SCHEDULED)) as watch:
            clients = await produce(bench.kafka, stack.prefix, count)
            started = time.monotonic()
            await stack.start("scheduler")
            await watch.wait_for(clients, started + timeout)
            booked = [watch.seen[c] for c in clients if c in watch.seen]
    raw = await raw_consumer(bench, topics.name(EventKind.SCREENING_PASSED), count, timeout)
    ours_rate, raw_rate = rate(booked), rate(raw)
    ratio = ours_rate / raw_rate if ours_rate is not None and raw_rate else None
    incomplete = "" if len(booked) == count else f" (incomplete: {len(booked)} in {timeout:.0f} s)"
    row = Row(
        what,
        ("—" if ours_rate is None else f"{ours_rate:,.1f} bookings/s") + incomplete,
        "—" if raw_rate is None else f"{raw_rate:,.1f} records/s (aiokafka + insert_one)",
        ratio,
        f"≥ {TARGET:.2f}",
        ratio is not None and ratio >= TARGET and len(booked) == count,
    )
    figures = {
        "count": count,
        "booked": len(booked),
        "bookings_per_second": ours_rate,
        "raw_records": len(raw),
        "raw_records_per_second": raw_rate,
        "timeout_s": timeout,
    }
    return Section("drain", [row], figures)
