"""Group commit for inserts: concurrent inserts into one collection share one `insert_many`.

Every hot path inserts (leases, aggregates, idempotency markers, reservation notes), and under
load many coroutines insert into the same collection at once. Each `insert_one` is a round
trip, a command the driver encodes and a transaction the server commits; sent together they
cost about one. The first insert goes out at once (no added latency when idle); inserts that
arrive while it is in flight wait for it and then leave together (docs/adr/0008).

Hand-written because PyMongo has no group commit of its own; it is one queue and one task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, WriteError

Document = dict[str, Any]
DUPLICATE_KEY = 11000
MAX_BATCH = 500


class InsertBatcher:
    """Inserts into one collection, each answered True (stored) or False (its `_id` exists)."""

    def __init__(self, collection: AsyncCollection[Document], *, max_batch: int = MAX_BATCH):
        self.collection = collection
        self.max_batch = max_batch
        self._waiting: list[tuple[Document, asyncio.Future[bool]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def insert(self, document: Document) -> bool:
        """Store `document`; False when a document with its `_id` exists already."""
        return (await self.insert_all([document]))[0]

    async def insert_all(self, documents: Sequence[Document]) -> list[bool]:
        """Store each document; per document, False when its `_id` existed already.

        Any other write error is raised to the caller whose document caused it.
        """
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in documents]
        self._waiting.extend(zip(documents, futures, strict=True))
        if self._sending is None or self._sending.done():
            self._sending = loop.create_task(self._send())
        return list(await asyncio.gather(*futures))

    async def _send(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                await self._send_batch(batch)
        except asyncio.CancelledError:  # shutting down: nobody is left waiting forever
            for _, future in self._waiting:
                future.cancel()
            self._waiting.clear()
            raise

    async def _send_batch(self, batch: list[tuple[Document, asyncio.Future[bool]]]) -> None:
        failed: dict[int, dict[str, Any]] = {}
        try:
            await self.collection.insert_many([doc for doc, _ in batch], ordered=False)
        except BulkWriteError as exc:
            failed = {error["index"]: error for error in exc.details.get("writeErrors", [])}
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the outcome is unknown for all: each caller decides
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for index, (_, future) in enumerate(batch):
            if future.done():
                continue  # its caller gave up waiting
            error = failed.get(index)
            if error is None or error.get("code") == DUPLICATE_KEY:
                future.set_result(error is None)
            else:
                future.set_exception(WriteError(error.get("errmsg", ""), error.get("code"), error))
