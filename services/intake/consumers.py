"""Intake's Kafka subscription: audit entries of the other services join the audit log."""

from __future__ import annotations

from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from pydantic import ValidationError

from services.intake.adapters.audit import AuditLog
from shared.audit import AuditEntry
from shared.consumer import IdempotentConsumer, RawRecord


def subscribe(broker: KafkaBroker, consumer: IdempotentConsumer, log: AuditLog) -> None:
    async def raw_body(message: StreamMessage[Any]) -> Any:
        return message.body

    @broker.subscriber(
        consumer.topics.audit,
        group_id=consumer.group_id,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=raw_body,
        title=f"{consumer.group_id}:audit",
    )
    async def on_entry(message: KafkaMessage) -> None:
        raw = message.raw_message
        assert not isinstance(raw, tuple)
        try:
            item = AuditEntry.model_validate_json(raw.value or b"")
        except ValidationError as exc:
            record = RawRecord(
                raw.topic, raw.partition, raw.offset, raw.key, raw.value, list(raw.headers or [])
            )
            await consumer.dead_letter(
                record, ValueError(f"not an audit entry: {exc.error_count()} errors"), attempts=0
            )
            return
        await log.append(item)  # idempotent: the entry id is the document id
