"""The one way an aggregate changes: load it under its lease, let its own methods decide,
commit the new state and the events it recorded in one write, hand both to the relay
(docs/adr/0008).

A handler reads as load → call → commit:

    async with uow.change(plans, plan_id) as plan:
        plan.complete(...)          # records `session_completed` on the plan

Nothing else writes an aggregate. The lease is held from the read to the publication of the
change's events (`shared.outbox`), so no change is lost between two writers, and a writer that
dies leaves an expired lease that tells the relay exactly which document to publish again.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any, Generic, TypeVar

from pymongo.asynchronous.collection import AsyncCollection

from shared.aggregate import Aggregate, Recorded
from shared.batching import InsertBatcher
from shared.envelope import Record, build
from shared.locks import Lease, LeaseLost, Locks
from shared.outbox import (
    HISTORY_SUFFIX,
    OUTBOX,
    REGISTRY_SUFFIX,
    Handoff,
    OutboxRelay,
    entries,
    lease_name,
)

A = TypeVar("A", bound=Aggregate)
Document = dict[str, Any]
UPDATED_AT = "updated_at"


def bson(value: Any) -> Any:
    """A model dump MongoDB can store: ids as strings, calendar dates in ISO form."""
    if isinstance(value, dict):
        return {k: bson(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [bson(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    return value


class AggregateStore(Generic[A]):
    """Where one kind of aggregate lives: its collection and how a document maps to it.

    With `history`, a finished aggregate leaves `collection` for `<collection>_history` on its
    last change: the collection that hot paths query and update then holds only what can
    still change, whatever the history (FerretDB v1 reads a whole collection for any filter
    and for every update).
    """

    def __init__(
        self,
        collection: AsyncCollection[Document],
        model: type[A],
        id_field: str,
        *,
        history: bool = False,
    ) -> None:
        self.collection = collection
        self.model = model
        self.id_field = id_field
        database = collection.database
        self.history = database[collection.name + HISTORY_SUFFIX] if history else None
        self.registry = database[collection.name + REGISTRY_SUFFIX] if history else None
        self.inserts = InsertBatcher(collection)
        self.claims = None if self.registry is None else InsertBatcher(self.registry)

    def key(self, aggregate: A) -> str:
        return str(getattr(aggregate, self.id_field))

    def dump(self, aggregate: A) -> Document:
        return bson(aggregate.model_dump(mode="python"))  # type: ignore[no-any-return]

    def load(self, document: Document) -> A:
        fields = self.model.model_fields
        state = {self.id_field: document["_id"]} | {
            k: v for k, v in document.items() if k in fields
        }
        return self.model.model_validate(state)

    async def get(self, aggregate_id: str) -> A | None:
        """A read outside any change (what an API shows); never the base of a write."""
        document = await self.collection.find_one({"_id": aggregate_id})
        if document is None and self.history is not None:
            document = await self.history.find_one({"_id": aggregate_id})
        return None if document is None else self.load(document)

    async def exists(self, aggregate_id: str) -> bool:
        return await self.get(aggregate_id) is not None

    async def claim(self, ids: Sequence[str]) -> list[str]:
        """The ids that may be created now: never created before, or whose creation was cut
        short. With history, a unique insert into `<collection>_ids` answers in constant time;
        only an id found there already costs a read of both places (a repeat: rare)."""
        if self.claims is None or not ids:
            return list(ids)
        new = await self.claims.insert_all([{"_id": i} for i in ids])
        return [i for i, fresh in zip(ids, new, strict=True) if fresh or not await self.exists(i)]

    async def find_all(self, query: Document) -> list[A]:
        """Matching aggregates, live and finished (a scan on FerretDB: not for hot paths)."""
        found = [self.load(d) async for d in self.collection.find(query)]
        if self.history is not None:
            seen = {self.key(a) for a in found}
            found += [
                a async for d in self.history.find(query) if self.key(a := self.load(d)) not in seen
            ]
        return found


class UnitOfWork:
    """Loads, commits and publishes aggregate changes for one service."""

    def __init__(
        self,
        locks: Locks,
        relay: OutboxRelay,
        *,
        source: str,
        prefix: str,
        wait: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.locks = locks
        self.relay = relay
        self.source = source
        self.prefix = prefix
        self.wait = wait
        self.clock = clock

    @contextlib.asynccontextmanager
    async def change(
        self,
        store: AggregateStore[A],
        aggregate_id: str,
        *,
        create: Callable[[], A] | None = None,
        wait: float | None = None,
    ) -> AsyncIterator[A | None]:
        """The aggregate (or `create()` when it does not exist yet; else None) for the block;
        on a normal exit its new state and recorded events are committed and published.

        Waits up to `wait` seconds for the lease (`LockTimeout` after; 0: try once).
        """
        collection = store.collection
        resource = lease_name(collection, aggregate_id)
        lease = await self.locks.acquire(resource, wait=self.wait if wait is None else wait)
        document: Document | None = None
        try:
            document = await collection.find_one({"_id": aggregate_id})
            aggregate: A | None = None if document is None else store.load(document)
            if aggregate is not None and store.history is not None and aggregate.finished:
                await self._retire(store, aggregate_id, document)  # a move cut short
                document = aggregate = None
            if document is None and create is not None:
                aggregate = create()
            yield aggregate
        except BaseException:
            self._finish(lease, document)
            raise
        if aggregate is None or not await self._commit(
            store, aggregate_id, aggregate, document, lease
        ):
            self._finish(lease, document)

    async def add(self, store: AggregateStore[A], aggregate: A, *, claimed: bool = False) -> bool:
        """Store a new aggregate with its events; False (nothing written) when it exists.

        The cheap path of a creation: the unique insert decides, so the lease is only the
        relay's marker (one insert) and the document is not read first. `claimed`: the caller
        has already claimed the id (`AggregateStore.claim`).
        """
        aggregate_id = store.key(aggregate)
        resource = lease_name(store.collection, aggregate_id)
        lease = await self.locks.acquire_new(resource, wait=self.wait)
        found = None
        if lease.took_over:  # a holder died here: its document may wait to be published
            found = await store.collection.find_one({"_id": aggregate_id})
        finished = not claimed and not await store.claim([aggregate_id])
        if found is not None or finished:
            self._finish(lease, found)
            aggregate.collect()
            return False
        if await self._commit(store, aggregate_id, aggregate, None, lease):
            return True
        self._finish(lease, None)
        return False

    async def reopen(
        self, store: AggregateStore[A], aggregate_id: str, decide: Callable[[A], bool]
    ) -> bool:
        """Bring a finished aggregate back from history when `decide` reopens it (a failed
        delivery queued again); False when it is not finished or `decide` declined.

        Under its lease: the reopened state is inserted live before the history copy goes,
        so a crash in between leaves it live (where loads look first) and finishing it again
        replaces the stale copy (`_retire`). Reopening records no events."""
        assert store.history is not None, "only an aggregate with history finishes"
        lease = await self.locks.acquire(lease_name(store.collection, aggregate_id), wait=self.wait)
        try:
            reopened = await self._reopen(store, aggregate_id, decide, lease)
        except LeaseLost:
            self.locks.abandon(lease)
            raise
        except BaseException:
            self._finish(lease, None)
            raise
        self._finish(lease, None)
        return reopened

    async def _reopen(
        self, store: AggregateStore[A], aggregate_id: str, decide: Callable[[A], bool], lease: Lease
    ) -> bool:
        assert store.history is not None
        live = await store.collection.find_one({"_id": aggregate_id})
        if live is not None:
            if not store.load(live).finished:
                return False
            await self._retire(store, aggregate_id, live)  # a move cut short
        document = await store.history.find_one({"_id": aggregate_id})
        if document is None:
            return False
        aggregate = store.load(document)
        if not decide(aggregate) or aggregate.finished:
            return False
        aggregate.collect()
        state = {k: v for k, v in store.dump(aggregate).items() if v is not None}
        await self.locks.check(lease)
        await store.collection.insert_one(
            {"_id": aggregate_id, **state, OUTBOX: [], UPDATED_AT: self.clock()}
        )
        await store.history.delete_one({"_id": aggregate_id})
        return True

    async def insert_new(self, store: AggregateStore[A], items: Sequence[A]) -> int:
        """Create aggregates that publish nothing: each a unique insert, which needs no lease.

        Ids already stored (live or in history) are skipped; how many were new.
        """
        if any(item.collect() for item in items):
            raise ValueError("an aggregate created with events goes through `add`")
        free = set(await store.claim([store.key(item) for item in items]))
        items = [item for item in items if store.key(item) in free]
        if not items:
            return 0
        now = self.clock()
        documents = [
            {"_id": store.key(item)}
            | {k: v for k, v in store.dump(item).items() if v is not None}
            | {UPDATED_AT: now}
            for item in items
        ]
        return sum(await store.inserts.insert_all(documents))

    async def _commit(
        self,
        store: AggregateStore[A],
        aggregate_id: str,
        aggregate: A,
        document: Document | None,
        lease: Lease,
    ) -> bool:
        outbox = entries(self._records(aggregate.collect()))
        state = store.dump(aggregate)
        unchanged = document is not None and all(document.get(k) == v for k, v in state.items())
        if unchanged and not outbox:
            return False  # nothing changed: no write
        # The lease was free (or its holder's entries are carried over): what the document
        # held was published, so this write replaces it.
        carried = document.get(OUTBOX, []) if document is not None and lease.took_over else []
        # Fields that became None are removed, so erased data is gone, not blanked.
        kept = {k: v for k, v in state.items() if v is not None}
        stored = {**kept, OUTBOX: carried + outbox, UPDATED_AT: self.clock()}
        dropped = {k: "" for k, v in state.items() if v is None and document and k in document}
        if document is not None:
            try:
                await self.locks.check(lease)  # a holder that stalled must not write over another
            except LeaseLost:
                self.locks.abandon(lease)
                raise
        try:
            if document is None:
                if not await store.inserts.insert({"_id": aggregate_id, **stored}):
                    return False  # created by a writer that did not take the lease
            else:
                update = {"$set": stored} | ({"$unset": dropped} if dropped else {})
                await store.collection.update_one({"_id": aggregate_id}, update)
            if store.history is not None and aggregate.finished:
                await self._retire(store, aggregate_id, stored)
        except BaseException:
            # The write may have applied: the stored lease is kept to expire, and the relay's
            # sweep then publishes whatever the document holds.
            self.locks.abandon(lease)
            raise
        self._hand_over(lease, stored[OUTBOX])
        return True

    async def _retire(
        self, store: AggregateStore[A], aggregate_id: str, stored: Document | None
    ) -> None:
        """Move a finished aggregate to history. Its final state is written where it lives
        first, so a crash at any point leaves it finished in one place or both (the next load
        completes the move), never half-changed. Its last events travel in the copy, where the
        relay's sweep also looks."""
        assert store.history is not None
        document = {**(stored or {}), "_id": aggregate_id}
        # Replace, not insert: an aggregate reopened from history finishes there again.
        await store.history.replace_one({"_id": aggregate_id}, document, upsert=True)
        await store.collection.delete_one({"_id": aggregate_id})

    def _finish(self, lease: Lease, document: Document | None) -> None:
        """No write: give the lease back, through the relay when a dead holder left entries."""
        carried = document.get(OUTBOX, []) if document is not None and lease.took_over else []
        self._hand_over(lease, carried)

    def _hand_over(self, lease: Lease, outbox: list[Document]) -> None:
        """The relay releases the lease once `outbox` is published; with nothing to publish it
        is released at once, not behind other changes' publishing."""
        if outbox:
            self.relay.submit(Handoff(lease, outbox))
        else:
            self.relay.release_soon(lease)

    def _records(self, recorded: list[Recorded | Record]) -> list[Record]:
        return [
            item
            if isinstance(item, Record)
            else build(
                item.data,
                source=self.source,
                prefix=self.prefix,
                correlation_id=item.correlation_id,
                causation_id=item.causation_id,
                event_id=item.event_id,
            )
            for item in recorded
        ]
