"""Intake's Kafka subscription: audit entries of the other services join the audit log."""

from __future__ import annotations

from faststream.kafka import KafkaBroker
from pydantic import ValidationError

from services.intake.adapters.audit import AuditLog
from shared.audit import AuditEntry
from shared.consumer import IdempotentConsumer
from shared.deadletter import RawRecord


def subscribe(broker: KafkaBroker, consumer: IdempotentConsumer, log: AuditLog) -> None:
    async def on_entry(record: RawRecord) -> None:
        try:
            item = AuditEntry.model_validate_json(record.value or b"")
        except ValidationError as exc:
            error = ValueError(f"not an audit entry: {exc.error_count()} errors")
            await consumer.dead_letter(record, error, attempts=0)
            return
        await log.append(item)  # idempotent: the entry id is the document id

    consumer.subscribe_records(broker, consumer.topics.audit, on_entry)
