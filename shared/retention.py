"""Retention: what only grows is pruned, so markers, leases and delivery records stay bounded.

Each rule names a collection, the time field that says when a document stopped mattering, and
how long to keep it. A worker prunes every hour (`CLINICFLOW_RETENTION_INTERVAL_SECONDS`).
MongoDB could do this with TTL indexes, but FerretDB v1 refuses `expireAfterSeconds`
("not implemented"), so it is done here, the same on both. Each round reads the ids of up
to `CHUNK` expired documents and deletes them by `_id`. On FerretDB that read scans the
collection, which is acceptable once an hour and far from every hot path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import DeleteOne
from pymongo.asynchronous.database import AsyncDatabase

log = logging.getLogger(__name__)
CHUNK = 500


@dataclass(frozen=True)
class Rule:
    """Documents of `collection` whose `field` is older than `keep` are deleted; with `unless`,
    not those whose `_id` starts with one of its prefixes."""

    collection: str
    field: str
    keep: timedelta
    unless: tuple[str, ...] = ()


class Retention:
    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        interval: float = 3600.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.interval = interval
        self.clock = clock
        self.rules: list[Rule] = []

    def keep(self, rule: Rule) -> None:
        self.rules.append(rule)

    async def ensure_indexes(self) -> None:
        """An index on each rule's field: MongoDB prunes by range without a scan."""
        for rule in self.rules:
            await self.db[rule.collection].create_index(rule.field)

    async def prune(self) -> dict[str, int]:
        """Delete what every rule lets go; how many documents per collection."""
        pruned: dict[str, int] = {}
        for rule in self.rules:
            collection = self.db[rule.collection]
            cutoff = self.clock() - rule.keep
            total = 0
            while True:
                found = collection.find({rule.field: {"$lt": cutoff}}, {"_id": 1}).limit(CHUNK)
                ids = [d["_id"] async for d in found]
                doomed = [i for i in ids if not str(i).startswith(rule.unless or ("\0",))]
                if doomed:
                    await collection.bulk_write([DeleteOne({"_id": i}) for i in doomed])
                total += len(doomed)
                if len(ids) < CHUNK or not doomed:
                    break
            if total:
                log.info("retention: pruned %d from %s", total, rule.collection)
            pruned[rule.collection] = total
        return pruned

    async def run(self) -> None:
        while True:
            try:
                await self.prune()
            except Exception as exc:
                log.warning("retention round failed (%s); retrying later", type(exc).__name__)
            await asyncio.sleep(self.interval)
