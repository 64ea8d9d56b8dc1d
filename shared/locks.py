"""Short leases on one resource at a time, built only on unique-key inserts.

Why not `find_one_and_update` or a version check: FerretDB v1 (our local and CI server) does not
apply an update's filter and its write atomically, so two processes can both "win" a conditional
update, and a read-modify-write can lose a concurrent one (docs/adr/0004). A unique `_id` insert,
though, succeeds for exactly one caller on MongoDB and on FerretDB alike. So a lease is a
document `<resource>#<generation>`: taking it inserts the next generation after the latest one,
which must have expired or been released; releasing deletes one's own document.

Every change to an aggregate that others may change too (a plan, a client, a site, an outbox
being drained) happens while holding the aggregate's lease. A holder that dies leaves its lease
to expire after `ttl`; the next generation takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

LOCKS = "locks"


class LockTimeout(Exception):
    """Another holder kept the resource for longer than the caller would wait."""


@dataclass(frozen=True)
class Lease:
    resource: str
    generation: int
    token: str

    @property
    def document_id(self) -> str:
        return f"{self.resource}#{self.generation}"


class Locks:
    def __init__(
        self, db: AsyncDatabase[dict[str, Any]], *, ttl: timedelta = timedelta(seconds=30)
    ) -> None:
        self.leases = db[LOCKS]
        self.ttl = ttl

    async def ensure_indexes(self) -> None:
        await self.leases.create_index(
            [("resource", ASCENDING), ("generation", DESCENDING)], name="latest_generation"
        )

    async def try_acquire(self, resource: str, *, ttl: timedelta | None = None) -> Lease | None:
        """The lease if nobody holds `resource` now; None otherwise (never waits)."""
        now = datetime.now(UTC)
        latest = await self.leases.find_one(
            {"resource": resource}, sort=[("generation", DESCENDING)]
        )
        if latest is not None and latest["expires_at"] > now:
            return None
        lease = Lease(
            resource=resource,
            generation=0 if latest is None else latest["generation"] + 1,
            token=uuid.uuid4().hex,
        )
        try:
            await self.leases.insert_one(
                {
                    "_id": lease.document_id,
                    "resource": resource,
                    "generation": lease.generation,
                    "token": lease.token,
                    "expires_at": now + (ttl or self.ttl),
                }
            )
        except DuplicateKeyError:
            return None
        return lease

    async def release(self, lease: Lease) -> None:
        await self.leases.delete_one({"_id": lease.document_id, "token": lease.token})

    @contextlib.asynccontextmanager
    async def hold(self, resource: str, *, wait: float = 10.0) -> AsyncIterator[Lease]:
        """Wait (with jittered backoff) until `resource` is ours, run the block, release."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        delay = 0.005
        while (lease := await self.try_acquire(resource)) is None:
            if loop.time() > deadline:
                raise LockTimeout(f"{resource} stayed busy for {wait:.0f}s")
            await asyncio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.2)
        try:
            yield lease
        finally:
            await self.release(lease)
