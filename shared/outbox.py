"""The outbox inside the aggregate, and the relay that publishes it (docs/adr/0002, 0008).

FerretDB v1 has no multi-document transactions, and a single-document write is atomic on both
MongoDB and FerretDB. So an aggregate's new state and the events it causes are one write: the
records go in the document's `outbox` array (`shared.uow`).

The writer keeps the aggregate's lease after that write and hands both to the relay, which
publishes the entries and only then releases the lease. So a released lease means "published",
and the relay never has to search for pending work:
- entries already in a document whose lease was free are published; the next change simply
  replaces them (no separate write to clear them);
- a holder that dies before publishing leaves its lease to expire; the relay's sweep, which reads
  only the small locks collection, takes such a lease over and publishes that document's
  entries again. Consumers skip the repeats by event id, so nothing is lost and nothing acts twice.

An entry Kafka can never take (larger than the broker accepts, an invalid topic, a stored
entry that no longer reads as a record) must not stop every other change of the service behind
it. When a batch fails for such a reason, the relay publishes it entry by entry, and keeps each
refused entry in `outbox_dead_letters` (with the error, logged and counted) instead of
retrying it for ever. A failure that may pass (the broker away) retries the whole batch.

Hand-written because no maintained library implements an outbox over MongoDB without
transactions; it is a few single-document operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared import tracing
from shared.envelope import Record
from shared.locks import Lease, Locks
from shared.metrics import OUTBOX_DEAD_LETTERED, OUTBOX_LAG, OUTBOX_PUBLISHED
from shared.publisher import REFUSED_BY_KAFKA, Publisher

log = logging.getLogger(__name__)

OUTBOX = "outbox"
HISTORY_SUFFIX = "_history"
REGISTRY_SUFFIX = "_ids"
"""A live collection `x`'s finished aggregates live in `x_history` (`shared.uow`)."""
LEGACY_PENDING = "outbox_pending"
DEAD_LETTERS = "outbox_dead_letters"
REFUSED = (*REFUSED_BY_KAFKA, KeyError, TypeError, ValueError)
"""Errors that publishing the same entry again cannot cure (the last three: a malformed entry)."""

Document = dict[str, Any]


def entries(records: Iterable[Record]) -> list[Document]:
    """The records as stored in an aggregate's `outbox` array."""
    now = datetime.now(UTC)
    return [
        {
            "id": r.event_id,
            "topic": r.topic,
            "key": r.key,
            "value": None if r.value is None else r.value.decode(),
            "headers": r.headers,
            "stored_at": now,
        }
        for r in records
    ]


def lease_name(collection: AsyncCollection[Document], aggregate_id: Any) -> str:
    """The lease every writer of an aggregate, and the relay, hold while changing it."""
    return f"{collection.name}:{aggregate_id}"


@dataclass(frozen=True)
class Handoff:
    """A committed change whose lease passes to the relay until its entries are published."""

    lease: Lease
    outbox: list[Document]


class OutboxRelay:
    """Publishes handed-off outbox entries in batches, in order, and releases their leases."""

    def __init__(
        self,
        collections: Sequence[AsyncCollection[Document]],
        publisher: Publisher,
        locks: Locks,
        *,
        sweep_interval: float = 5.0,
    ) -> None:
        self.collections = {c.name: c for c in collections}
        self.publisher = publisher
        self.locks = locks
        self.dead_letters = locks.leases.database[DEAD_LETTERS]
        self.sweep_interval = sweep_interval
        self._queue: list[Handoff] = []
        self._releasing: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False

    def submit(self, handoff: Handoff) -> None:
        """Publish these entries, then release the lease (the writer keeps neither)."""
        self._queue.append(handoff)
        self._wake.set()

    def release_soon(self, lease: Lease) -> None:
        """Release a lease that has nothing to publish, without waiting for the queue."""
        task = asyncio.get_running_loop().create_task(self._release(lease))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _release(self, lease: Lease) -> None:
        try:
            await self.locks.release(lease)
        except Exception:
            log.warning("releasing %s failed; it expires instead", lease.resource)

    async def drain(self, *, within: float) -> None:
        """Publish what is queued before the process exits (a shutdown), for up to `within`
        seconds; what is left then is published by another replica's sweep."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self._queue:
                    if not await self._guarded(self.publish_queued):
                        await asyncio.sleep(0.5)
        if self._queue:
            log.warning(
                "stopping with %d change(s) unpublished; a sweep publishes them", len(self._queue)
            )
        await asyncio.gather(*self._releasing, return_exceptions=True)

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def stop(self) -> None:
        """End `run` at its next turn. Cancelling it is enough on its own, but a cancellation
        some library swallows would leave a loop that never ends; this flag cannot be lost."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Publish what is handed over as it comes; sweep for dead holders' leases in between."""
        await self._guarded(self.recover_legacy)
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while not self._stopping:
            if loop.time() >= next_sweep:
                await self._guarded(self.sweep)
                next_sweep = loop.time() + self.sweep_interval
            if self._queue:
                if not await self._guarded(self.publish_queued):
                    await asyncio.sleep(0.5)
                continue
            idle = next_sweep - loop.time()
            if idle <= 0:
                continue  # asyncio.timeout(0) would swallow a cancellation already pending
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that arrives as the event is set, and the relay never stops.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(idle):
                    await self._wake.wait()
            self._wake.clear()

    async def _guarded(self, step: Any) -> bool:
        try:
            await step()
            return True
        except Exception:
            log.exception("outbox relay step %s failed; retrying", step.__name__)
            return False

    async def publish_queued(self) -> int:
        """Publish every queued entry (in order), then release the leases in one round trip.

        A batch whose publishing fails stays queued, with its leases, and is retried; one that
        Kafka refuses for good goes out entry by entry (`_one_by_one`).
        """
        batch = self._queue[:]
        sent = [e for h in batch for e in h.outbox]
        try:
            with tracing.publishing(sent):
                await self.publisher.send_many([record_of(e) for e in sent])
        except REFUSED:
            return await self._one_by_one(batch)
        return await self._done(batch)

    async def _one_by_one(self, batch: list[Handoff]) -> int:
        """Publish each entry alone; keep the ones Kafka refuses as dead letters. A failure
        that may pass stops here: what is done so far is released, the rest stays queued."""
        done: list[Handoff] = []
        refused: list[Document] = []
        try:
            for handoff in batch:
                for entry in handoff.outbox:
                    try:
                        await self.publisher.send_many([record_of(entry)])
                    except REFUSED as exc:
                        await self._dead_letter(handoff.lease.resource, entry, exc)
                        refused.append(entry)
                done.append(handoff)
        finally:
            await self._done(done, refused)
        return len(done)

    async def _dead_letter(self, resource: str, entry: Document, error: Exception) -> None:
        topic = str(entry.get("topic", "?"))
        log.error(
            "outbox entry %s of %s refused by Kafka for good (%s); kept in %s",
            entry.get("id"), resource, type(error).__name__, DEAD_LETTERS,
        )  # fmt: skip
        kept: Document = {"_id": str(entry.get("id", resource)), "resource": resource}
        kept |= {"entry": entry}
        kept |= {"error": f"{type(error).__name__}: {error}"[:500], "at": datetime.now(UTC)}
        with contextlib.suppress(DuplicateKeyError):  # kept already by an earlier attempt
            await self.dead_letters.insert_one(kept)
        OUTBOX_DEAD_LETTERED.labels(topic).inc()

    async def _done(self, batch: list[Handoff], refused: Sequence[Document] = ()) -> int:
        """Drop published hand-offs from the queue (they are its head) and release leases."""
        del self._queue[: len(batch)]
        dead = {id(entry) for entry in refused}
        records = [e for handoff in batch for e in handoff.outbox if id(e) not in dead]
        now = datetime.now(UTC)
        for entry in records:
            OUTBOX_PUBLISHED.labels(entry["topic"]).inc()
            stored_at = entry.get("stored_at")
            if isinstance(stored_at, datetime):
                OUTBOX_LAG.observe((now - stored_at).total_seconds())
        if batch:
            await self.locks.release_many([handoff.lease for handoff in batch])
        return len(records)

    async def sweep(self) -> int:
        """Take over the expired leases of this relay's aggregates and republish their entries."""
        taken = 0
        queued = {handoff.lease.resource for handoff in self._queue}
        for name, collection in self.collections.items():
            for resource in await self.locks.expired(f"{name}:"):
                if resource in queued:
                    continue  # ours, waiting for Kafka: publishing it twice helps nobody
                lease = await self.locks.try_acquire(resource)
                if lease is None:
                    continue
                aggregate_id = resource.split(":", 1)[1]
                document = await collection.find_one({"_id": aggregate_id}, {OUTBOX: 1})
                if document is None:  # it finished with that change and moved to history
                    history = collection.database[name + HISTORY_SUFFIX]
                    document = await history.find_one({"_id": aggregate_id}, {OUTBOX: 1})
                self.submit(Handoff(lease, [] if document is None else document.get(OUTBOX, [])))
                taken += 1
        if taken:
            log.warning("outbox relay took over %d expired lease(s)", taken)
        return taken

    async def recover_legacy(self) -> None:
        """Publish what a relay before ADR 0008 left pending (a one-time scan at start)."""
        for name, collection in self.collections.items():
            async for document in collection.find({LEGACY_PENDING: True}, {"_id": 1}):
                lease = await self.locks.acquire(f"{name}:{document['_id']}")
                current = await collection.find_one({"_id": document["_id"]})
                if current is not None and current.get(LEGACY_PENDING):
                    await collection.update_one(
                        {"_id": document["_id"]}, {"$unset": {LEGACY_PENDING: ""}}
                    )
                self.submit(Handoff(lease, [] if current is None else current.get(OUTBOX, [])))


def record_of(entry: Document) -> Record:
    """An outbox entry back as the record to send."""
    value = entry["value"]
    return Record(
        topic=entry["topic"],
        key=entry["key"],
        value=None if value is None else value.encode(),
        headers=entry["headers"],
        event_id=entry["id"],
    )
