"""The outbox inside the aggregate, and the relay that drains it (docs/adr/0002).

FerretDB v1 has no multi-document transactions, and a single-document update is atomic on both
MongoDB and FerretDB. So an aggregate's state change and the events it causes go in the same
update: the records are pushed onto the aggregate's `outbox` array and `outbox_pending` is set.

The relay claims one pending aggregate at a time with a lease (`find_one_and_update`), publishes
its entries in order, then pulls them from the array. A relay that dies after publishing and
before pulling leaves the lease to expire; the next claimant republishes the same bytes with the
same event id, which idempotent consumers skip. No entry is ever lost.

Hand-written because no maintained library implements an outbox over MongoDB without
transactions; it is a few single-document operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from shared.envelope import Record
from shared.metrics import OUTBOX_LAG, OUTBOX_PUBLISHED
from shared.publisher import Publisher

log = logging.getLogger(__name__)

OUTBOX = "outbox"
PENDING = "outbox_pending"
LEASE = "outbox_lease_until"
OWNER = "outbox_owner"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

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
    return {**document, OUTBOX: entries, PENDING: bool(entries), LEASE: EPOCH}


def push_outbox(update: Mapping[str, Any], records: Iterable[Record]) -> Document:
    """Add the events to an aggregate update, so both are written in one atomic operation."""
    now = datetime.now(UTC)
    entries = [_entry(r, now) for r in records]
    merged: Document = {op: dict(fields) for op, fields in update.items()}
    if entries:
        merged.setdefault("$push", {})[OUTBOX] = {"$each": entries}
        merged.setdefault("$set", {})[PENDING] = True
    return merged


async def ensure_outbox_index(collection: AsyncCollection[Document]) -> None:
    """The relay's claim query reads only pending aggregates, whatever the collection's size."""
    await collection.create_index([(PENDING, ASCENDING), (LEASE, ASCENDING)], name="outbox_claim")


class OutboxRelay:
    """Publishes the outbox entries of the given collections, in order per aggregate."""

    def __init__(
        self,
        collections: Sequence[AsyncCollection[Document]],
        publisher: Publisher,
        *,
        lease: timedelta = timedelta(seconds=30),
        idle_interval: float = 0.5,
    ) -> None:
        self.collections = list(collections)
        self.publisher = publisher
        self.lease = lease
        self.idle_interval = idle_interval
        self.owner = uuid.uuid4().hex
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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=backoff)
                self._wake.clear()

    async def drain(self) -> int:
        """Publish every pending aggregate that no other relay holds; the count published."""
        sent_ids: set[str] = set()
        for collection in self.collections:
            while (document := await self._claim(collection)) is not None:
                if any(entry["id"] in sent_ids for entry in document.get(OUTBOX, [])):
                    raise RuntimeError(
                        f"outbox of {collection.name}/{document['_id']} still holds sent entries"
                    )
                sent_ids.update(await self._publish(collection, document))
        return len(sent_ids)

    async def _claim(self, collection: AsyncCollection[Document]) -> Document | None:
        """Lease one pending aggregate (no projection: FerretDB v1's findAndModify lacks it)."""
        now = datetime.now(UTC)
        return await collection.find_one_and_update(
            {PENDING: True, "$or": [{LEASE: {"$lt": now}}, {LEASE: {"$exists": False}}]},
            {"$set": {LEASE: now + self.lease, OWNER: self.owner}},
            return_document=ReturnDocument.AFTER,
        )

    async def _publish(
        self, collection: AsyncCollection[Document], document: Document
    ) -> list[str]:
        sent: list[Document] = []
        try:
            for entry in document.get(OUTBOX, []):
                await self.publish_entry(entry)
                sent.append(entry)
        finally:
            await self.mark_sent(collection, document["_id"], sent)
        return [entry["id"] for entry in sent]

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
        self, collection: AsyncCollection[Document], aggregate_id: Any, sent: list[Document]
    ) -> None:
        """Remove published entries and release the lease; clear the flag once empty.

        `$pullAll` with the entries exactly as read: FerretDB v1 ignores `$pull` conditions.
        """
        await collection.update_one(
            {"_id": aggregate_id, OWNER: self.owner},
            {"$pullAll": {OUTBOX: sent}, "$set": {LEASE: EPOCH}},
        )
        await collection.update_one(
            {"_id": aggregate_id, OUTBOX: {"$size": 0}}, {"$set": {PENDING: False}}
        )
