"""The Kafka producer behind the outbox relay and the dead-letter queue.

aiokafka directly rather than FastStream's `broker.publish`: the relay must send stored bytes
exactly as stored (no re-encoding, no extra headers), and tombstones need a real null value,
which FastStream's encoder turns into an empty body.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from shared.envelope import Record

REFUSED_BY_KAFKA = (
    CorruptRecordException,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
"""Errors that sending the same record again cannot cure."""


class Publisher(Protocol):
    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> None:
        """Send one record and return once the broker has acknowledged it."""

    async def send_many(self, records: list[Record]) -> None:
        """Send the records in order and return once the broker has acknowledged them all."""


class KafkaPublisher:
    """An idempotent producer (`acks=all`): a record is either stored by Kafka or an error."""

    def __init__(self, bootstrap_servers: str, client_id: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Connect; a stopped aiokafka producer cannot restart, so each start makes a new one."""
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=1,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> None:
        if self._producer is None:
            raise RuntimeError("the Kafka publisher is not started")
        await self._producer.send_and_wait(topic, value, key=key, headers=headers)

    async def send_many(self, records: list[Record]) -> None:
        """Queue every record first (one batch per partition, in order), then wait for all."""
        if self._producer is None:
            raise RuntimeError("the Kafka publisher is not started")
        sent = [
            await self._producer.send(
                r.topic,
                r.value,
                key=r.key.encode(),
                headers=[(k, v.encode()) for k, v in r.headers.items()],
            )
            for r in records
        ]
        await asyncio.gather(*sent)


async def send_record(publisher: Publisher, record: Record) -> None:
    await publisher.send(
        record.topic,
        record.value,
        key=record.key.encode(),
        headers=[(k, v.encode()) for k, v in record.headers.items()],
    )
