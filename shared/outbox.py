"""The outbox inside the aggregate, and the relay that drains it (docs/adr/0002).

FerretDB v1 has no multi-document transactions, and a single-document update is atomic on both
MongoDB and FerretDB. So an aggregate's state change and the events it causes go in the same
update: the records are pushed onto the aggregate's `outbox` array and `outbox_pending` is set.

The relay takes an aggregate's lease (`shared.locks`, the same lease every writer of that
aggregate holds), publishes its entries in order, then pulls them from the array. A relay that
dies after publishing and before pulling keeps the lease until it expires; the next holder
republishes the same bytes with the same event id, which idempotent consumers skip. No entry is
ever lost.

Hand-written because no maintained library implements an outbox over MongoDB without
transactions; it is a few single-document operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from shared.envelope import Record
from shared.locks import Locks
from shared.metrics import OUTBOX_LAG, OUTBOX_PUBLISHED
from shared.publisher import Publisher

log = logging.getLogger(__name__)

OUTBOX = "outbox"
PENDING = "outbox_pending"

Document = dict[str, Any]


def _entry(record: Record, now: datetime) -> Document:
    return {
        "id": record.event_id,
        "topic": record.topic,
        "key": record.key,
        "value": None if record.value is None else record.value.decode(),
        "headers": record.headers,
        "stored_at": now,
    }


def with_outbox(document: Document, records: Iterable[Record]) -> Document:
    """A new aggregate document carrying its first events."""
    now = datetime.now(UTC)
    entries = [_entry(r, now) for r in records]
    return {**document, OUTBOX: entries, PENDING: bool(entries)}


def push_outbox(update: Mapping[str, Any], records: Iterable[Record]) -> Document:
    """Add the events to an aggregate update, so both are written in one atomic operation.

    The caller holds the aggregate's lease (`lease_name`) while reading and writing it.
    """
    now = datetime.now(UTC)
    entries = [_entry(r, now) for r in records]
    merged: Document = {op: dict(fields) for op, fields in update.items()}
    if entries:
        merged.setdefault("$push", {})[OUTBOX] = {"$each": entries}
        merged.setdefault("$set", {})[PENDING] = True
    return merged


def lease_name(collection: AsyncCollection[Document], aggregate_id: Any) -> str:
    """The lease every writer of an aggregate, and the relay, hold while changing it."""
    return f"{collection.name}:{aggregate_id}"


async def ensure_outbox_index(collection: AsyncCollection[Document]) -> None:
    """The relay's query reads only pending aggregates, whatever the collection's size."""
    await collection.create_index([(PENDING, ASCENDING)], name="outbox_pending")


class OutboxRelay:
    """Publishes the outbox entries of the given collections, in order per aggregate."""

    def __init__(
        self,
        collections: Sequence[AsyncCollection[Document]],
        publisher: Publisher,
        locks: Locks,
        *,
        lease: timedelta = timedelta(seconds=30),
        idle_interval: float = 0.5,
        batch: int = 100,
    ) -> None:
        self.collections = list(collections)
        self.publisher = publisher
        self.locks = locks
        self.lease = lease
        self.idle_interval = idle_interval
        self.batch = batch
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """Wake the relay now: a handler of this process has just stored outbox entries."""
        self._wake.set()

    async def run(self) -> None:
        """Drain forever; sleep between rounds only when nothing was pending."""
        backoff = self.idle_interval
        while True:
            try:
                published = await self.drain()
                backoff = self.idle_interval
            except Exception:
                log.exception("outbox relay round failed; retrying")
                published = 0
                backoff = min(backoff * 2, 10.0)
            if published == 0:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that arrives as the event is set, and the relay never stops.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff):
                        await self._wake.wait()
                self._wake.clear()

    async def drain(self) -> int:
        """Publish every pending aggregate that no other writer holds; the count published."""
        sent_ids: set[str] = set()
        for collection in self.collections:
            while True:
                pending = [
                    doc["_id"]
                    async for doc in collection.find({PENDING: True}, {"_id": 1}).limit(self.batch)
                ]
                published = 0
                for aggregate_id in pending:
                    published += await self._drain_one(collection, aggregate_id, sent_ids)
                if published == 0:
                    break
        return len(sent_ids)

    async def _drain_one(
        self, collection: AsyncCollection[Document], aggregate_id: Any, sent_ids: set[str]
    ) -> int:
        lease = await self.locks.try_acquire(lease_name(collection, aggregate_id), ttl=self.lease)
        if lease is None:
            return 0
        try:
            document = await collection.find_one({"_id": aggregate_id})
            entries: list[Document] = [] if document is None else document.get(OUTBOX, [])
            if any(entry["id"] in sent_ids for entry in entries):
                raise RuntimeError(
                    f"outbox of {collection.name}/{aggregate_id} still holds sent entries"
                )
            sent: list[Document] = []
            try:
                for entry in entries:
                    await self.publish_entry(entry)
                    sent.append(entry)
            finally:
                if document is not None:
                    await self.mark_sent(collection, aggregate_id, sent, remaining=entries)
        except Exception:
            await self.locks.release(lease)
            raise
        await self.locks.release(lease)
        sent_ids.update(entry["id"] for entry in sent)
        return len(sent)

    async def publish_entry(self, entry: Document) -> None:
        value = entry["value"]
        await self.publisher.send(
            entry["topic"],
            None if value is None else value.encode(),
            key=entry["key"].encode(),
            headers=[(k, v.encode()) for k, v in entry["headers"].items()],
        )
        OUTBOX_PUBLISHED.labels(entry["topic"]).inc()
        stored_at = entry.get("stored_at")
        if isinstance(stored_at, datetime):
            OUTBOX_LAG.observe((datetime.now(UTC) - stored_at).total_seconds())

    async def mark_sent(
        self,
        collection: AsyncCollection[Document],
        aggregate_id: Any,
        sent: list[Document],
        *,
        remaining: list[Document],
    ) -> None:
        """Remove published entries, and clear the flag once none is left (lease held).

        `$pullAll` with the entries exactly as read: FerretDB v1 ignores `$pull` conditions.
        """
        update: Document = {"$pullAll": {OUTBOX: sent}} if sent else {}
        if len(sent) == len(remaining):
            update["$set"] = {PENDING: False}
        if update:
            await collection.update_one({"_id": aggregate_id}, update)
