"""The process-wide clients of a service and their lifecycle.

A service process must start (and answer `/healthz`) even while Kafka or MongoDB are still
coming up, as they do under docker-compose; it turns ready once both answer. So connecting is a
background loop with backoff, and start-up steps that need both (indexes, topics, workers) run
after it succeeds.

Work that acts on events (the Kafka subscribers, and workers registered with `after_views`)
starts only once every view (`view`) has read its topic to the end: a handler that looked up a
contact or a site in a half-read view would act on a client or site as if it did not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared import tracing
from shared.access import AccessKey
from shared.auth import Access, RouteTable
from shared.compacted import CompactedView, OnChange
from shared.consumer import PROCESSED, IdempotentConsumer
from shared.deadletter import SEEN, DeadLetters, RawRecord
from shared.gauges import KafkaGauges
from shared.ids import load_ids
from shared.locks import LOCKS, Locks
from shared.oidc import OidcVerifier
from shared.outbox import OutboxRelay
from shared.publisher import KafkaPublisher
from shared.retention import Retention, Rule
from shared.settings import ServiceSettings
from shared.topics import Topics, ensure_topics
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

StartStep = Callable[[], Awaitable[None]]
Worker = Callable[[], Coroutine[Any, Any, None]]
ReadinessCheck = Callable[[], bool]
STALE_LEASE = timedelta(days=1)
DRAIN_SECONDS = 10.0
STOP_SECONDS = 10.0
"""How long the workers get to end once cancelled; one that does not is logged and left."""


class ServiceRuntime:
    """Owns the MongoDB client, the Kafka broker and the service's background workers."""

    def __init__(self, settings: ServiceSettings, broker: KafkaBroker | None = None) -> None:
        self.settings = settings
        tracing.configure(settings.service_name)
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=3000
        )
        self.db: AsyncDatabase[dict[str, Any]] = self.mongo[settings.database_name]
        client_id = f"clinicflow-{settings.service_name}"
        self.broker = broker or KafkaBroker(
            settings.kafka_bootstrap_servers,
            client_id=client_id,
            logger=logging.getLogger("faststream"),
            log_level=logging.DEBUG,
            graceful_timeout=DRAIN_SECONDS,
            middlewares=[KafkaPrometheusMiddleware(registry=REGISTRY, app_name=client_id)],
        )
        self.topics = Topics(settings.topic_prefix)
        self.publisher = KafkaPublisher(settings.kafka_bootstrap_servers, client_id)
        self.dead_letters = DeadLetters(self.publisher, self.db)
        self.retention = Retention(self.db, interval=settings.retention_interval_seconds)
        markers = timedelta(days=settings.retention_markers_days)
        self.retention.keep(Rule(PROCESSED, "processed_at", markers))
        self.retention.keep(Rule(SEEN, "at", markers))
        self.locks = Locks(self.db, ttl=timedelta(seconds=settings.lease_seconds))
        self.ids = load_ids(
            settings.id_secret.get_secret_value() if settings.id_secret else None,
            production=settings.environment == "production",
            local_file=settings.local_id_secret_file,
        )
        self.started = asyncio.Event()
        self._start_steps: list[StartStep] = [
            self.locks.ensure_indexes,
            self.retention.ensure_indexes,
        ]
        self.gauges = KafkaGauges(settings.kafka_bootstrap_servers)
        refresh = periodic(settings.metrics_interval_seconds, self.gauges.refresh, "kafka_gauges")
        self._workers: list[Worker] = [self.locks.keep_alive, self.retention.run, refresh]
        self._after_views: list[Worker] = []
        self._views: list[CompactedView[Any]] = []
        self._stop_steps: list[StartStep] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._readiness: dict[str, ReadinessCheck] = {}
        self.relay: OutboxRelay | None = None

    def on_start(self, step: StartStep) -> StartStep:
        """Register a step that runs once both Kafka and MongoDB answer (before workers)."""
        self._start_steps.append(step)
        return step

    def on_stop(self, step: StartStep) -> StartStep:
        """Register a step that runs when the service shuts down (closing clients)."""
        self._stop_steps.append(step)
        return step

    def worker(self, loop: Worker, *, after_views: bool = False) -> Worker:
        """Register a long-running loop started once the service is connected, or with
        `after_views` once every view has caught up too (timers acting on what views hold)."""
        (self._after_views if after_views else self._workers).append(loop)
        return loop

    def view(self, name: str, view: CompactedView[Any]) -> None:
        """Read a compacted topic into memory from the start; `/readyz`, the Kafka subscribers
        and `after_views` workers wait until it has caught up."""
        self._dead_letter_invalid(view)
        self.worker(view.run)
        self.readiness(name, lambda: view.caught_up)
        self._views.append(view)

    def _dead_letter_invalid(self, view: CompactedView[Any]) -> None:
        """Records a view cannot read go to the DLQ once per service (`DeadLetters.once`)."""
        group = f"{self.settings.topic_prefix}{self.settings.service_name}-view"
        self.gauges.view_topics.add(view.topic)

        async def invalid(record: RawRecord, error: Exception) -> None:
            await self.dead_letters.once(record, error, group=group)

        view.on_invalid = invalid

    def unit_of_work(self, *collections: str) -> UnitOfWork:
        """The unit of work over these aggregate collections, with its relay as a worker."""
        relay = OutboxRelay([self.db[name] for name in collections], self.publisher, self.locks)
        # The relay's sweep takes over its collections' expired leases within seconds; any other
        # lease left expired for a day belonged to a holder that died and nobody needs.
        relayed = tuple(f"{name}:" for name in collections)
        self.retention.keep(Rule(LOCKS, "expires_at", STALE_LEASE, unless=relayed))
        self.worker(relay.run)
        self.relay = relay
        return UnitOfWork(
            self.locks,
            relay,
            source=self.settings.service_name,
            prefix=self.settings.topic_prefix,
        )

    def consumer(self, group_suffix: str = "") -> IdempotentConsumer:
        """An idempotent consumer for this service's group (one group per service)."""
        group = f"{self.settings.topic_prefix}{self.settings.service_name}{group_suffix}"
        consumer = IdempotentConsumer(
            db=self.db, publisher=self.publisher, topics=self.topics, group_id=group
        )
        self._start_steps.insert(0, consumer.ensure_indexes)
        self.gauges.consumers.append(consumer)
        return consumer

    def access(self, routes: RouteTable, *, on_key: OnChange[AccessKey] | None = None) -> Access:
        """The guard of this service's routes, reading API keys from the access-keys topic.

        `/readyz` waits until every key published so far is known, so a ready service never
        refuses a valid key; a key created or revoked later is seen within a poll (~0.5 s).
        """
        settings = self.settings
        keys: CompactedView[AccessKey] = CompactedView(
            settings.kafka_bootstrap_servers,
            self.topics.access_keys,
            AccessKey.model_validate_json,
            on_change=on_key,
            client_id=f"clinicflow-{settings.service_name}-keys",
        )
        self._dead_letter_invalid(keys)
        self.worker(keys.run)
        self.readiness("access_keys", lambda: keys.caught_up)
        oidc = None
        if settings.oidc_issuer and settings.oidc_audience:
            oidc = OidcVerifier(
                settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url
            )
        return Access(keys, routes, oidc=oidc, rate_limit=settings.rate_limit)

    def readiness(self, name: str, check: ReadinessCheck) -> None:
        """Add a condition to `/readyz`, e.g. a compacted view's `caught_up` (SPEC section 1)."""
        if name in ("kafka", "mongodb", "started") or name in self._readiness:
            raise ValueError(f"readiness check {name!r} is already defined")
        self._readiness[name] = check

    async def _connect(self) -> None:
        await _until_done(self._connect_once, self.publisher.stop, "waiting for Kafka and MongoDB")
        self._start(self._workers)
        log.info("%s connected to Kafka and MongoDB", self.settings.service_name)
        for view in self._views:
            await view.wait_caught_up()
        await _until_done(self.broker.start, self.broker.stop, "waiting to subscribe")
        self._start(self._after_views)
        self.started.set()
        log.info("%s views caught up; consuming", self.settings.service_name)

    async def _connect_once(self) -> None:
        await self.mongo.admin.command("ping")
        await ensure_topics(
            self.settings.kafka_bootstrap_servers,
            self.topics,
            partitions=self.settings.topic_partitions,
            replication_factor=self.settings.topic_replication_factor,
        )
        await self.publisher.start()
        for step in self._start_steps:
            await step()

    def _start(self, workers: list[Worker]) -> None:
        for loop in workers:
            self._tasks.append(asyncio.create_task(loop(), name=loop.__name__))

    async def ready(self) -> dict[str, bool]:
        """Whether each dependency answers now; used by `/readyz`."""
        mongo_ok = False
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.mongo.admin.command("ping"), timeout=2)
            mongo_ok = True
        kafka_ok = self.started.is_set() and await self.broker.ping(timeout=2)
        checks = {"kafka": kafka_ok, "mongodb": mongo_ok, "started": self.started.is_set()}
        for name, check in self._readiness.items():
            checks[name] = bool(check())
        return checks

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: object = None) -> AsyncIterator[None]:
        """Start connecting; on the way out (SIGTERM), drain before closing: no new events are
        taken, the handlers running finish and their offsets are committed (FastStream's
        `graceful_timeout`), then what they committed is published, within `DRAIN_SECONDS`."""
        connect = asyncio.create_task(self._connect(), name="connect")
        try:
            yield
        finally:
            connect.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connect
            with contextlib.suppress(Exception):
                await self.broker.stop()
            if self.relay is not None:
                self.relay.stop()
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                ended, stuck = await asyncio.wait(self._tasks, timeout=STOP_SECONDS)
                for task in ended:
                    if not task.cancelled():
                        task.exception()  # read, so that asyncio does not warn of it at exit
                for task in stuck:
                    log.warning("worker %s did not stop within %ss", task.get_name(), STOP_SECONDS)
            if self.relay is not None:
                with contextlib.suppress(Exception):
                    await self.relay.drain(within=DRAIN_SECONDS)
            with contextlib.suppress(Exception):
                await self.publisher.stop()
            for step in self._stop_steps:
                with contextlib.suppress(Exception):
                    await step()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(tracing.flush)
            await self.mongo.close()


async def _until_done(
    step: Callable[[], Awaitable[Any]], undo: Callable[[], Awaitable[Any]], waiting: str
) -> None:
    """Run `step` until it succeeds, undoing a failed attempt and backing off up to 5 s."""
    delay = 0.5
    while True:
        try:
            await step()
            return
        except Exception as exc:
            log.warning("%s: %s", waiting, type(exc).__name__)
            with contextlib.suppress(Exception):
                await undo()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def periodic(
    interval: float, step: Callable[[], Awaitable[int]], name: str
) -> Callable[[], Coroutine[Any, Any, None]]:
    """A worker that runs `step` again at once while it finds work, else after `interval`."""

    async def loop() -> None:
        while True:
            try:
                busy = await step() > 0
            except Exception:
                log.exception("%s failed; retrying", name)
                busy = False
            if not busy:
                await asyncio.sleep(interval)

    loop.__name__ = name
    return loop
