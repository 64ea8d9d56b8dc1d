"""The wiring works: real Kafka and a real MongoDB-wire server answer the project's clients."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faststream.kafka import KafkaBroker
from pymongo.asynchronous.database import AsyncDatabase

from tests.conftest import Servers


async def test_kafka_produce_consume_round_trip(servers: Servers, topic_prefix: str) -> None:
    topic = f"{topic_prefix}smoke"
    producer = AIOKafkaProducer(bootstrap_servers=servers.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"client-1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=f"{topic_prefix}smoke-group",
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"client-1", b"hello")


async def test_mongodb_insert_and_find(db: AsyncDatabase[dict[str, Any]]) -> None:
    await db.things.insert_one({"_id": "a", "n": 1})
    await db.things.create_index([("n", 1)], unique=True)
    found = await db.things.find_one({"n": 1})
    assert found == {"_id": "a", "n": 1}
    assert await db.command("ping") == {"ok": 1.0}


async def test_faststream_subscriber_receives_a_real_message(
    servers: Servers, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}faststream"
    received: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    broker = KafkaBroker(servers.kafka_bootstrap_servers)

    @broker.subscriber(topic, group_id=f"{topic_prefix}g", auto_offset_reset="earliest")
    async def handle(body: dict[str, str]) -> None:
        await received.put(body)

    marker = uuid.uuid4().hex
    async with broker:
        await broker.start()
        await broker.publish({"marker": marker}, topic=topic)
        body = await asyncio.wait_for(received.get(), timeout=30)
    assert body == {"marker": marker}
