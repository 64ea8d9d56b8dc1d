"""When each client's first session was booked, as a reader of `session_scheduled` sees it.

A workflow is done for the clinic once `session_scheduled` with sequence 1 is on the topic, so
the benchmarks time that moment rather than anything inside the services. Reading starts at the
topic's end as it is when the watch opens: earlier bookings are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Collection
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, TopicPartition


class BookingWatch:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.topic = topic
        self.seen: dict[str, float] = {}
        """client_id -> `time.monotonic()` when its first session was read."""
        self.awaiting: set[str] = set()
        self.complete = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.consumer.start()
        tps = [TopicPartition(self.topic, p) for p in sorted(await self._partitions())]
        self.consumer.assign(tps)
        for tp, end in (await self.consumer.end_offsets(tps)).items():
            self.consumer.seek(tp, end)
        self.task = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.consumer.stop()

    async def _partitions(self) -> set[int]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await self.consumer._client.force_metadata_update()
            partitions: set[int] | None = self.consumer.partitions_for_topic(self.topic)
            if partitions:
                return partitions
            await asyncio.sleep(0.2)
        raise RuntimeError(f"topic {self.topic} does not exist")

    async def _read(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in batch.values():
                for record in records:
                    data = json.loads(record.value)["data"]
                    if data["sequence"] == 1 and data["client_id"] not in self.seen:
                        self.seen[data["client_id"]] = now
                        self.awaiting.discard(data["client_id"])
            if not self.awaiting:
                self.complete.set()

    async def wait_for(self, clients: Collection[str], deadline: float) -> None:
        """Return once every one of `clients` was booked, or at `deadline` (monotonic)."""
        self.awaiting = {client for client in clients if client not in self.seen}
        if not self.awaiting:
            return
        self.complete.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.complete.wait(), max(0.0, deadline - time.monotonic()))
