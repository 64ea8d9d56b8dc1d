"""Dead letters: a copy of each record nobody could handle, in `<topic>.dlq`, with what failed
and where in headers (SPEC section 2: nothing is dropped silently).

Two cases need more than one `send`:
- Kafka may refuse the copy itself: a value close to the broker's limit grows past it with the
  `dlq-*` headers. Retrying would stop the partition for ever, so the DLQ gets a small stand-in
  (`dlq-value-omitted`), and the original bytes are kept in `dead_letter_values` under
  `topic:partition:offset`.
- A compacted-topic view has no consumer group: every replica reads every record, on every
  start. `once` copies a record only for the first reader that claims it (a unique insert in
  `dead_letters_seen`), so a bad record shows once in the DLQ, not once per replica and restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import Binary
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.batching import InsertBatcher
from shared.publisher import REFUSED_BY_KAFKA, Publisher
from shared.topics import DLQ_SUFFIX

log = logging.getLogger(__name__)

VALUES = "dead_letter_values"
SEEN = "dead_letters_seen"
DLQ_HEADERS = (
    "dlq-error",
    "dlq-error-type",
    "dlq-original-topic",
    "dlq-original-partition",
    "dlq-original-offset",
    "dlq-consumer-group",
    "dlq-attempts",
    "dlq-failed-at",
)


@dataclass(frozen=True)
class RawRecord:
    """The parts of a consumed Kafka record the consumer needs (decoupled from aiokafka)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @property
    def where(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


class DeadLetters:
    """Copies records to their topic's DLQ for one service."""

    def __init__(self, publisher: Publisher, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.publisher = publisher
        self.values = db[VALUES]
        self.seen = InsertBatcher(db[SEEN])

    async def send(self, record: RawRecord, error: Exception, *, group: str, attempts: int) -> None:
        """Copy `record` to `<topic>.dlq`; raises only when Kafka may take it on a retry."""
        reason = str(error)[:1000] or type(error).__name__
        headers = [
            *((k, v) for k, v in record.headers if not k.startswith("dlq-")),
            ("dlq-error", reason.encode()),
            ("dlq-error-type", type(error).__name__.encode()),
            ("dlq-original-topic", record.topic.encode()),
            ("dlq-original-partition", str(record.partition).encode()),
            ("dlq-original-offset", str(record.offset).encode()),
            ("dlq-consumer-group", group.encode()),
            ("dlq-attempts", str(attempts).encode()),
            ("dlq-failed-at", datetime.now(UTC).isoformat().encode()),
        ]
        dlq = record.topic + DLQ_SUFFIX
        try:
            await self.publisher.send(dlq, record.value, key=record.key, headers=headers)
        except REFUSED_BY_KAFKA as refused:
            await self._keep_aside(record, headers, refused)
        log.error("dead-lettered %s for group %s: %s", record.where, group, type(error).__name__)

    async def once(self, record: RawRecord, error: Exception, *, group: str) -> None:
        """`send`, unless another reader of `group` (a replica, or this one before a restart)
        dead-lettered this record already."""
        claim = {"_id": f"{group}|{record.where}", "at": datetime.now(UTC)}
        if await self.seen.insert(claim):
            await self.send(record, error, group=group, attempts=0)

    async def _keep_aside(
        self, record: RawRecord, headers: list[tuple[str, bytes]], refused: Exception
    ) -> None:
        """Kafka will not take the copy: keep the original bytes here, send a stand-in."""
        # Headers as documents: FerretDB refuses nested arrays such as `[[name, value]]`.
        headers_kept = [{"name": k, "value": Binary(v)} for k, v in record.headers]
        kept: dict[str, Any] = {"_id": record.where, "key": record.key, "headers": headers_kept}
        kept |= {"value": None if record.value is None else Binary(record.value)}
        kept |= {"refused": type(refused).__name__, "at": datetime.now(UTC)}
        with contextlib.suppress(DuplicateKeyError):  # kept by an earlier attempt
            await self.values.insert_one(kept)
        size = len(record.value or b"")
        stand_in = json.dumps({"omitted": True, "size": size, "stored_as": record.where})
        marks = [("dlq-value-omitted", b"true"), ("dlq-value-stored-as", record.where.encode())]
        dlq = record.topic + DLQ_SUFFIX
        try:
            await self.publisher.send(
                dlq, stand_in.encode(), key=record.key, headers=headers + marks
            )
        except REFUSED_BY_KAFKA:
            # Even the stand-in is refused (the original headers are too large): the value and
            # headers are kept in `dead_letter_values`, which the error log names.
            log.error("the DLQ refused even a stand-in for %s; kept in %s", record.where, VALUES)
