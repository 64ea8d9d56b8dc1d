"""API key records on the compacted `<prefix>access_keys` topic: write one, read them all.

The CLI is the only writer. Each service reads the topic into a view (`shared.auth`), so a new
or revoked key reaches every service within a poll of its consumer, with nothing shared but
Kafka.
"""

from __future__ import annotations

import json
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.access import AccessKey
from shared.topics import Topics, ensure_topics


async def publish(bootstrap: str, topics: Topics, record: AccessKey) -> None:
    await ensure_topics(bootstrap, topics)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.access_keys,
            record.model_dump_json().encode(),
            key=record.key_id.encode(),
            headers=[("content-type", b"application/json")],
        )
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topics: Topics) -> dict[str, AccessKey]:
    """Every key's latest record, read from the beginning to the topic's current end."""
    await ensure_topics(bootstrap, topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    keys: dict[str, AccessKey] = {}
    try:
        partitions = consumer.partitions_for_topic(topics.access_keys)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topics.access_keys) or set()
        tps = [TopicPartition(topics.access_keys, p) for p in partitions]
        if not tps:
            return keys
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)

        async def behind() -> bool:
            return any([await consumer.position(tp) < end for tp, end in ends.items()])

        while await behind():
            batch: dict[Any, list[Any]] = await consumer.getmany(*tps, timeout_ms=500)
            for records in batch.values():
                for record in records:
                    key = record.key.decode()
                    if record.value is None:
                        keys.pop(key, None)
                    else:
                        keys[key] = AccessKey.model_validate(json.loads(record.value))
    finally:
        await consumer.stop()
    return keys
