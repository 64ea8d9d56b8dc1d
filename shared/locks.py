"""Short leases on one resource at a time, built only on unique-key inserts.

Why not `find_one_and_update` or a version check: FerretDB v1 (our local and CI server) does not
apply an update's filter and its write atomically, so two processes can both "win" a conditional
update, and a read-modify-write can lose a concurrent one (docs/adr/0004). A unique `_id` insert,
though, succeeds for exactly one caller on MongoDB and on FerretDB alike. So a lease is a
document `<resource>#<generation>`: taking it inserts the next generation after the latest one,
which must have expired or been released; releasing deletes one's own document and any older
generation left by a holder that died.

The leases double as the outbox relay's to-do list (docs/adr/0008): a writer keeps its lease
until the events of its change are published, so a lease that expired marks the one aggregate
whose events may still wait, and the locks collection stays as small as the work in flight.

Every change to an aggregate that others may change too (a plan, a client, a site, an outbox
being drained) happens while holding the aggregate's lease. A holder that dies leaves its lease
to expire after `ttl`; the next generation takes over.

A live holder renews what it holds every `ttl / 3` (`keep_alive`), so a slow Kafka publish or
SMTP send does not let a second holder in. A holder that stalls (a paused process, a long
garbage collection) cannot renew; before it writes, `check` asks whether its lease was taken
over meanwhile, and `LeaseLost` stops the write. Expiry times are set and compared on the
database server's clock (`now`), so processes whose clocks disagree still agree on when a
lease ends (docs/adr/0010).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from shared.batching import DeleteBatcher, InsertBatcher

LOCKS = "locks"
log = logging.getLogger(__name__)


class LockTimeout(Exception):
    """Another holder kept the resource for longer than the caller would wait."""


class LeaseLost(LockTimeout):
    """This holder stalled past its lease and another took it over: its write is refused, and
    the work is retried like any lease that was busy."""


@dataclass(frozen=True)
class Lease:
    resource: str
    generation: int
    token: str
    took_over: bool = False
    """Whether an expired holder came before: what it wrote may not be published yet."""
    turn: asyncio.Lock | None = field(default=None, compare=False, repr=False)
    """This process's queue for the resource, held with the lease."""
    since: float = field(default=0.0, compare=False)
    """`time.monotonic()` just before the lease was stored: it lasts `ttl` from then at least."""

    @property
    def document_id(self) -> str:
        return f"{self.resource}#{self.generation}"


class Locks:
    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        ttl: timedelta = timedelta(seconds=30),
        local_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.leases = db[LOCKS]
        self.inserts = InsertBatcher(self.leases)
        self.deletes = DeleteBatcher(self.leases)
        self.ttl = ttl
        self._local_clock = local_clock
        self._offset = timedelta(0)
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}
        self._held: dict[str, Lease] = {}
        self._confirmed: dict[str, float] = {}

    async def ensure_indexes(self) -> None:
        await self.leases.create_index(
            [("resource", ASCENDING), ("generation", DESCENDING)], name="latest_generation"
        )
        await self.sync_clock()

    def now(self) -> datetime:
        """The database server's time, as this process best knows it."""
        return self._local_clock() + self._offset

    async def sync_clock(self) -> None:
        """Measure how far this process's clock is from the server's (`hello`'s `localTime`)."""
        sent, local = time.monotonic(), self._local_clock()
        hello = await self.leases.database.client.admin.command("hello")
        half_trip = timedelta(seconds=(time.monotonic() - sent) / 2)
        server: datetime = hello["localTime"]
        if server.tzinfo is None:
            server = server.replace(tzinfo=UTC)
        self._offset = server - (local + half_trip)

    async def keep_alive(self) -> None:
        """Renew every lease this process holds, every `ttl / 3`, for as long as it runs."""
        while True:
            await asyncio.sleep(self.ttl.total_seconds() / 3)
            try:
                await self.sync_clock()
                await self.renew()
            except Exception as exc:
                log.warning("renewing leases failed (%s); retrying", type(exc).__name__)

    async def renew(self) -> None:
        held = list(self._held.values())
        if not held:
            return
        sent, expires_at = time.monotonic(), self.now() + self.ttl
        renewal = {"$set": {"expires_at": expires_at}}
        await self.leases.bulk_write(
            [UpdateOne({"_id": lease.document_id}, renewal) for lease in held], ordered=False
        )
        for lease in held:
            if lease.document_id in self._confirmed:
                self._confirmed[lease.document_id] = sent

    async def check(self, lease: Lease) -> None:
        """Raise `LeaseLost` if another holder may have taken `lease` over: before a write.

        Free while the lease is young (nobody can take over before it expires); past half
        its time, two reads by `_id`: its own document must still be there, with its token,
        and no next generation may exist. (A taker that released deleted the older ones.)
        """
        confirmed = self._confirmed.get(lease.document_id, lease.since)
        if time.monotonic() - confirmed < self.ttl.total_seconds() / 2:
            return
        own = await self.leases.find_one({"_id": lease.document_id}, {"token": 1})
        successor = f"{lease.resource}#{lease.generation + 1}"
        if (
            own is None
            or own.get("token") != lease.token
            or await self.leases.find_one({"_id": successor}, {"_id": 1})
        ):
            raise LeaseLost(f"{lease.resource}: the lease was taken over while this holder stalled")
        self._confirmed[lease.document_id] = time.monotonic()
        await self.leases.update_one(
            {"_id": lease.document_id}, {"$set": {"expires_at": self.now() + self.ttl}}
        )

    async def try_acquire(self, resource: str, *, ttl: timedelta | None = None) -> Lease | None:
        """The lease if nobody holds `resource` now; None otherwise (never waits)."""
        now = self.now()
        latest = await self.leases.find_one(
            {"resource": resource}, sort=[("generation", DESCENDING)]
        )
        if latest is not None and latest["expires_at"] > now:
            return None
        lease = Lease(
            resource=resource,
            generation=0 if latest is None else latest["generation"] + 1,
            token=uuid.uuid4().hex,
            took_over=latest is not None,
            since=time.monotonic(),
        )
        if not await self.inserts.insert(self._document(lease, now, ttl)):
            return None
        self._hold(lease)
        return lease

    async def acquire_new(self, resource: str, *, wait: float = 10.0) -> Lease:
        """The lease of a resource being created: one insert when nobody ever held it.

        Only for creations guarded by a unique insert of their own (`UnitOfWork.add`): a
        holder that outlived its lease could coexist with this one, but not both can create.
        """
        turn = self._enter(resource)
        if not turn.locked():
            await turn.acquire()
            since = time.monotonic()
            lease = Lease(
                resource=resource, generation=0, token=uuid.uuid4().hex, turn=turn, since=since
            )
            try:
                if await self.inserts.insert(self._document(lease, self.now())):
                    self._hold(lease)
                    return lease
                turn.release()
            except BaseException:
                turn.release()
                self._forget(resource)
                raise
        self._forget(resource)
        return await self.acquire(resource, wait=wait)

    def _document(self, lease: Lease, now: datetime, ttl: timedelta | None = None) -> Any:
        return {
            "_id": lease.document_id,
            "resource": lease.resource,
            "generation": lease.generation,
            "token": lease.token,
            "expires_at": now + (ttl or self.ttl),
        }

    async def release(self, lease: Lease) -> None:
        await self.release_many([lease])

    async def release_many(self, leases: list[Lease]) -> None:
        """Give the leases back, with the older generations they took over: deletes by `_id`
        (index searches; FerretDB v1 scans for `$in`), sent together with concurrent ones."""
        if not leases:
            return
        ids = [
            doc_id
            for lease in leases
            for doc_id in (
                lease.document_id,
                *(f"{lease.resource}#{g}" for g in range(lease.generation) if lease.took_over),
            )
        ]
        for lease in leases:
            self._drop(lease)
        try:
            await self.deletes.delete(*ids)
        finally:
            for lease in leases:
                self._leave(lease)

    async def acquire(self, resource: str, *, wait: float = 10.0) -> Lease:
        """Wait until `resource` is ours; the caller releases it.

        Writers of this process queue in order on a local lock, so only one of them at a time
        asks the database; holders elsewhere are waited for with jittered backoff.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        turn = self._enter(resource)
        queued = False
        try:
            if turn.locked() and wait <= 0:
                raise LockTimeout(f"{resource} is busy")
            try:
                async with asyncio.timeout(max(wait, 0.001)):
                    await turn.acquire()
            except TimeoutError:
                raise LockTimeout(f"{resource} stayed busy for {wait:.0f}s") from None
            queued = True
            delay = 0.002
            while (lease := await self.try_acquire(resource)) is None:
                if loop.time() > deadline:
                    raise LockTimeout(f"{resource} stayed busy for {wait:.0f}s")
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.1)
        except BaseException:
            if queued:
                turn.release()
            self._forget(resource)
            raise
        held = replace(lease, turn=turn)
        self._hold(held)
        return held

    def abandon(self, lease: Lease) -> None:
        """Stop holding locally, leaving the stored lease to expire (its write is in doubt)."""
        self._drop(lease)
        self._leave(lease)

    def _hold(self, lease: Lease) -> None:
        self._held[lease.document_id] = lease
        self._confirmed[lease.document_id] = lease.since

    def _drop(self, lease: Lease) -> None:
        self._held.pop(lease.document_id, None)
        self._confirmed.pop(lease.document_id, None)

    def _enter(self, resource: str) -> asyncio.Lock:
        turn, users = self._turns.get(resource, (asyncio.Lock(), 0))
        self._turns[resource] = (turn, users + 1)
        return turn

    def _forget(self, resource: str) -> None:
        turn, users = self._turns[resource]
        if users <= 1:
            del self._turns[resource]
        else:
            self._turns[resource] = (turn, users - 1)

    def _leave(self, lease: Lease) -> None:
        if lease.turn is not None and lease.turn.locked():
            lease.turn.release()
            self._forget(lease.resource)

    @contextlib.asynccontextmanager
    async def hold(self, resource: str, *, wait: float = 10.0) -> AsyncIterator[Lease]:
        """Hold `resource` for the block (for changes that publish nothing)."""
        lease = await self.acquire(resource, wait=wait)
        try:
            yield lease
        finally:
            await self.release(lease)

    async def expired(self, prefix: str) -> list[str]:
        """Resources under `prefix` whose latest lease expired unreleased (its holder died)."""
        now = self.now()
        latest: dict[str, dict[str, Any]] = {}
        async for doc in self.leases.find({}):
            current = latest.get(doc["resource"])
            if current is None or doc["generation"] > current["generation"]:
                latest[doc["resource"]] = doc
        return [
            resource
            for resource, doc in latest.items()
            if resource.startswith(prefix) and doc["expires_at"] <= now
        ]
