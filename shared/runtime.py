"""The process-wide clients of a service and their lifecycle.

A service process must start (and answer `/healthz`) even while Kafka or MongoDB are still
coming up, as they do under docker-compose; it turns ready once both answer. So connecting is a
background loop with backoff, and start-up steps that need both (indexes, topics, workers) run
after it succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from faststream.kafka import KafkaBroker
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

StartStep = Callable[[], Awaitable[None]]
Worker = Callable[[], Coroutine[Any, Any, None]]


class ServiceRuntime:
    """Owns the MongoDB client, the Kafka broker and the service's background workers."""

    def __init__(self, settings: ServiceSettings, broker: KafkaBroker | None = None) -> None:
        self.settings = settings
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=3000
        )
        self.db: AsyncDatabase[dict[str, Any]] = self.mongo[settings.database_name]
        self.broker = broker or KafkaBroker(
            settings.kafka_bootstrap_servers, client_id=f"clinicflow-{settings.service_name}"
        )
        self.started = asyncio.Event()
        self._start_steps: list[StartStep] = []
        self._workers: list[Worker] = []
        self._tasks: list[asyncio.Task[None]] = []

    def on_start(self, step: StartStep) -> StartStep:
        """Register a step that runs once both Kafka and MongoDB answer (before workers)."""
        self._start_steps.append(step)
        return step

    def worker(self, loop: Worker) -> Worker:
        """Register a long-running loop started once the service is connected."""
        self._workers.append(loop)
        return loop

    async def _connect(self) -> None:
        delay = 0.5
        while True:
            try:
                await self.mongo.admin.command("ping")
                await self.broker.start()
                for step in self._start_steps:
                    await step()
                break
            except Exception as exc:
                log.warning("waiting for Kafka and MongoDB: %s", type(exc).__name__)
                with contextlib.suppress(Exception):
                    await self.broker.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        for loop in self._workers:
            self._tasks.append(asyncio.create_task(loop(), name=loop.__name__))
        self.started.set()
        log.info("%s connected to Kafka and MongoDB", self.settings.service_name)

    async def ready(self) -> dict[str, bool]:
        """Whether each dependency answers now; used by `/readyz`."""
        mongo_ok = False
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.mongo.admin.command("ping"), timeout=2)
            mongo_ok = True
        kafka_ok = self.started.is_set() and await self.broker.ping(timeout=2)
        return {"kafka": kafka_ok, "mongodb": mongo_ok, "started": self.started.is_set()}

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: object = None) -> AsyncIterator[None]:
        connect = asyncio.create_task(self._connect(), name="connect")
        try:
            yield
        finally:
            connect.cancel()
            for task in self._tasks:
                task.cancel()
            for task in [connect, *self._tasks]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                await self.broker.stop()
            await self.mongo.close()
