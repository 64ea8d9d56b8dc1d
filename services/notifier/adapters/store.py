"""The notifier's MongoDB state: aftercare steps (durable timers), deliveries and webhooks.

Steps and deliveries are created with deterministic ids, so a repeated event creates nothing
new; every later change goes through the unit of work (`shared.uow`), under the document's
lease, because FerretDB v1 does not make a conditional update atomic (docs/adr/0004).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.notifier.domain.steps import Delivery, Step
from services.notifier.domain.webhooks import SECRET_PREFIX, SigningSecret, Webhook
from shared.uow import AggregateStore

Document = dict[str, Any]
STEPS = "aftercare_steps"
DELIVERIES = "deliveries"
WEBHOOKS = "webhooks"
FRESH_SECONDS = 1.0
ERASED = "erased_clients"


class NotifierStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.step_store = AggregateStore(db[STEPS], Step, "aftercare_id", history=True)
        self.delivery_store = AggregateStore(db[DELIVERIES], Delivery, "delivery_id", history=True)
        self.steps = db[STEPS]
        self.deliveries = db[DELIVERIES]
        self.webhook_store = AggregateStore(db[WEBHOOKS], Webhook, "webhook_id")
        self.webhooks = db[WEBHOOKS]
        self.erased = db[ERASED]
        self._webhooks: tuple[float, list[Webhook]] | None = None

    async def ensure_indexes(self) -> None:
        await self.steps.create_index([("status", ASCENDING), ("due_at", ASCENDING)], name="due")
        await self.deliveries.create_index(
            [("status", ASCENDING), ("next_attempt_at", ASCENDING)], name="due"
        )
        for live in (self.steps, self.deliveries):
            await live.create_index([("client_id", ASCENDING)])
        for store in (self.step_store, self.delivery_store):
            assert store.history is not None
            await store.history.create_index([("client_id", ASCENDING)])
            await store.history.create_index([("webhook_id", ASCENDING)])
        await self.deliveries.create_index([("webhook_id", ASCENDING)])

    async def seal_legacy_secrets(self, seal: Callable[[str], str]) -> int:
        """Subscriptions made before Standard Webhooks kept one plaintext `secret`. It is sealed
        in place, as the whsec_ form of the same key bytes, so its owner verifies with the
        secret they have (`whsec_` + its base64); how many were sealed."""
        sealed = 0
        async for found in self.webhooks.find({"secret": {"$exists": True}}):
            legacy = str(found["secret"])
            secret = SigningSecret(
                sealed=seal(SECRET_PREFIX + base64.b64encode(legacy.encode()).decode()),
                created_at=found.get("created_at") or datetime.now(UTC),
            )
            result = await self.webhooks.update_one(
                {"_id": found["_id"], "secret": {"$exists": True}},
                {"$set": {"secrets": [secret.model_dump()]}, "$unset": {"secret": ""}},
            )
            sealed += result.modified_count
        return sealed

    async def ids(self, collection: AsyncCollection[Document], query: Document) -> list[str]:
        return [str(doc["_id"]) async for doc in collection.find(query, {"_id": 1})]

    async def mark_erased(self, client_id: str) -> None:
        try:
            await self.erased.insert_one({"_id": client_id, "erased_at": datetime.now(UTC)})
        except DuplicateKeyError:
            return

    async def subscribed(self, event_type: str, site_id: str) -> list[Webhook]:
        """Active webhooks for this event type that cover the site. Every published event asks,
        so the list is read at most once a second per process; a change made here is seen at
        once (`forget_webhooks`), one made by another replica within `FRESH_SECONDS`."""
        now = time.monotonic()
        if self._webhooks is None or now - self._webhooks[0] >= FRESH_SECONDS:
            active = await self.webhook_store.find_all({"active": True})
            self._webhooks = (now, active)
        return [w for w in self._webhooks[1] if event_type in w.events and w.covers(site_id)]

    def forget_webhooks(self) -> None:
        self._webhooks = None

    async def is_erased(self, client_id: str) -> bool:
        return await self.erased.find_one({"_id": client_id}) is not None
