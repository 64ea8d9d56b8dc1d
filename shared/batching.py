"""Group commit: concurrent inserts (or deletes by `_id`) on one collection share one command.

Every hot path inserts (leases, aggregates, idempotency markers, reservation notes) or deletes
by id, and under load many coroutines do so on the same collection at once. Each `insert_one`
is a round trip, a command the driver encodes and a transaction the server commits; sent
together they cost about one. The first operation goes out at once (no added latency when
idle); those that arrive while it is in flight wait for it and then leave together
(docs/adr/0008).

Hand-written because PyMongo has no group commit of its own; it is one queue and one task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from pymongo import DeleteOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, WriteError

Document = dict[str, Any]
DUPLICATE_KEY = 11000
MAX_BATCH = 500

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class _GroupCommit(Generic[Item, Answer]):
    """Queues items for one collection; `_write` sends a batch and answers each item."""

    def __init__(self, collection: AsyncCollection[Document], *, max_batch: int = MAX_BATCH):
        self.collection = collection
        self.max_batch = max_batch
        self._waiting: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def _submit(self, items: Sequence[Item]) -> list[Answer]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Answer]] = [loop.create_future() for _ in items]
        self._waiting.extend(zip(items, futures, strict=True))
        if self._sending is None or self._sending.done():
            self._sending = loop.create_task(self._send())
        return list(await asyncio.gather(*futures))

    async def _send(self) -> None:
        while self._waiting:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            try:
                answers = await self._write([item for item, _ in batch])
            except asyncio.CancelledError:  # shutting down: nobody is left waiting forever
                for _, future in batch + self._waiting:
                    future.cancel()
                self._waiting.clear()
                raise
            except Exception as exc:  # the outcome is unknown for all: each caller decides
                answers = [exc] * len(batch)
            for (_, future), answer in zip(batch, answers, strict=True):
                if future.done():
                    continue  # its caller gave up waiting
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    async def _write(self, items: list[Item]) -> list[Answer | Exception]:
        raise NotImplementedError


class InsertBatcher(_GroupCommit[Document, bool]):
    """Inserts into one collection, each answered True (stored) or False (its `_id` exists)."""

    async def insert(self, document: Document) -> bool:
        """Store `document`; False when a document with its `_id` exists already."""
        return (await self._submit([document]))[0]

    async def insert_all(self, documents: Sequence[Document]) -> list[bool]:
        """Store each document; per document, False when its `_id` existed already.

        Any other write error is raised to the caller whose document caused it.
        """
        return await self._submit(documents)

    async def _write(self, items: list[Document]) -> list[bool | Exception]:
        try:
            await self.collection.insert_many(items, ordered=False)
        except BulkWriteError as exc:
            failed = {error["index"]: error for error in exc.details.get("writeErrors", [])}
            return [_answer(failed.get(index)) for index in range(len(items))]
        return [True] * len(items)


def _answer(error: dict[str, Any] | None) -> bool | Exception:
    if error is None:
        return True
    if error.get("code") == DUPLICATE_KEY:
        return False
    return WriteError(error.get("errmsg", ""), error.get("code"), error)


class DeleteBatcher(_GroupCommit[Any, None]):
    """Deletes by `_id` from one collection: one `bulk_write` of `DeleteOne`s per batch, each
    an index search (a `$in` filter would scan the collection on FerretDB v1)."""

    async def delete(self, *ids: Any) -> None:
        if ids:
            await self._submit(ids)

    async def _write(self, items: list[Any]) -> list[Exception | None]:
        await self.collection.bulk_write([DeleteOne({"_id": i}) for i in items], ordered=False)
        return [None] * len(items)
