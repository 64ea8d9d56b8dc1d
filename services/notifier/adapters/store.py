"""The notifier's MongoDB state: aftercare steps (durable timers), deliveries and webhooks.

Steps and deliveries are created with deterministic ids, so a repeated event creates nothing
new; every later change is made under the document's lease (`shared.locks`), because FerretDB
v1 does not make a conditional update atomic (docs/adr/0004).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.envelope import Record
from shared.locks import Locks
from shared.outbox import lease_name, push_outbox

Document = dict[str, Any]
Decide = Callable[[Document], tuple[Document, list[Record]] | None]
STEPS = "aftercare_steps"
DELIVERIES = "deliveries"
WEBHOOKS = "webhooks"
ERASED = "erased_clients"


class NotifierStore:
    def __init__(self, db: AsyncDatabase[Document], locks: Locks) -> None:
        self.steps = db[STEPS]
        self.deliveries = db[DELIVERIES]
        self.webhooks = db[WEBHOOKS]
        self.erased = db[ERASED]
        self.locks = locks

    async def ensure_indexes(self) -> None:
        await self.steps.create_index([("status", ASCENDING), ("due_at", ASCENDING)], name="due")
        await self.steps.create_index([("client_id", ASCENDING), ("due_at", ASCENDING)])
        await self.steps.create_index([("session_id", ASCENDING)])
        await self.deliveries.create_index(
            [("status", ASCENDING), ("next_attempt_at", ASCENDING)], name="due"
        )
        await self.deliveries.create_index([("aftercare_id", ASCENDING)])
        await self.deliveries.create_index([("webhook_id", ASCENDING)])

    async def insert_new(self, collection: AsyncCollection[Document], docs: list[Document]) -> int:
        """Insert the documents that do not exist yet; how many were new."""
        if not docs:
            return 0
        try:
            result = await collection.insert_many(docs, ordered=False)
            return len(result.inserted_ids)
        except BulkWriteError as exc:
            return int(exc.details.get("nInserted", 0))

    async def change(
        self,
        collection: AsyncCollection[Document],
        document_id: str,
        decide: Decide,
        *,
        wait: bool = False,
    ) -> Document | None:
        """Read the document under its lease and apply `decide`'s update (None: leave it).

        Without `wait`, a document someone else holds is skipped (None); with it, the change
        waits for the lease. Returns the document as read, or None when it is missing.
        """
        resource = lease_name(collection, document_id)
        if wait:
            async with self.locks.hold(resource):
                return await self._apply(collection, document_id, decide)
        lease = await self.locks.try_acquire(resource)
        if lease is None:
            return None
        try:
            return await self._apply(collection, document_id, decide)
        finally:
            await self.locks.release(lease)

    async def _apply(
        self, collection: AsyncCollection[Document], document_id: str, decide: Decide
    ) -> Document | None:
        document = await collection.find_one({"_id": document_id})
        if document is None:
            return None
        decided = decide(document)
        if decided is not None:
            update, records = decided
            update.setdefault("$set", {})["updated_at"] = datetime.now(UTC)
            await collection.update_one({"_id": document_id}, push_outbox(update, records))
        return document

    async def mark_erased(self, client_id: str) -> None:
        try:
            await self.erased.insert_one({"_id": client_id, "erased_at": datetime.now(UTC)})
        except DuplicateKeyError:
            return

    async def is_erased(self, client_id: str) -> bool:
        return await self.erased.find_one({"_id": client_id}) is not None
