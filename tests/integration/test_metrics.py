"""What an operator reads on `/metrics`: consumer lag, DLQ depth, readiness and RED per route,
against the real broker and MongoDB-wire server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from pymongo.asynchronous.database import AsyncDatabase

from services.notifier.adapters.store import STEPS, NotifierStore
from services.notifier.handlers import NotifierContext
from services.notifier.metrics import count_overdue
from shared.deadletter import RawRecord
from shared.envelope import build
from shared.events import EventKind
from shared.examples import EXAMPLES
from shared.health import health_router
from shared.http_metrics import HttpMetrics
from shared.publisher import KafkaPublisher, send_record
from shared.runtime import ServiceRuntime
from shared.settings import ServiceSettings
from shared.topics import Topics
from tests.support import eventually

pytestmark = pytest.mark.integration
Settings = Callable[[str], ServiceSettings]


def sample_sum(metric: str, **labels: str) -> float:
    """The sum of every sample of `metric` whose labels include `labels`."""
    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == metric and labels.items() <= sample.labels.items()
    )


@pytest.fixture
def runtime(service_settings: Settings) -> ServiceRuntime:
    """A service (no HTTP) whose gauges are refreshed every 0.2 s."""
    settings = service_settings(f"lagged{uuid.uuid4().hex[:6]}")
    settings = settings.model_copy(update={"metrics_interval_seconds": 0.2})
    return ServiceRuntime(settings)


async def test_lag_rises_while_records_wait_and_falls_once_they_are_handled(
    runtime: ServiceRuntime, topics: Topics, publisher: KafkaPublisher
) -> None:
    topic = topics.name(EventKind.SESSION_COMPLETED)
    gate = asyncio.Event()
    handled: list[int] = []

    async def slow(record: RawRecord) -> None:
        await gate.wait()
        handled.append(record.offset)

    consumer = runtime.consumer()
    consumer.subscribe_records(runtime.broker, topic, slow)
    completed = EXAMPLES[EventKind.SESSION_COMPLETED]  # one client: one partition, in order
    for _ in range(5):
        await send_record(publisher, build(completed, source="scheduler", prefix=topics.prefix))

    async with runtime.lifespan():

        async def waiting() -> bool:
            return sample_sum("clinicflow_consumer_lag_records", group=consumer.group_id) >= 4

        await eventually(waiting)
        assert handled == []
        gate.set()

        async def caught_up() -> bool:
            lag = sample_sum("clinicflow_consumer_lag_records", group=consumer.group_id)
            return len(handled) == 5 and lag == 0

        await eventually(caught_up)
        assert sample_sum(
            "clinicflow_consumer_lag_records", group=consumer.group_id, topic=topic
        ) == sample_sum("clinicflow_consumer_lag_records", group=consumer.group_id)


async def test_dlq_depth_counts_what_was_dead_lettered(
    runtime: ServiceRuntime, topics: Topics, publisher: KafkaPublisher
) -> None:
    kind = EventKind.SCREENING_PASSED
    consumer = runtime.consumer()

    async def never(_event: object) -> None:
        raise AssertionError("an unreadable record reached the handler")

    consumer.subscribe(runtime.broker, kind, never)

    async with runtime.lifespan():

        async def reported() -> bool:
            return (
                REGISTRY.get_sample_value(
                    "clinicflow_dlq_depth_records", {"topic": topics.dlq(kind)}
                )
                == 0
            )

        await eventually(reported)
        await publisher.send(topics.name(kind), b"not json", key=b"c-1", headers=[])
        await publisher.send(topics.name(kind), b"{}", key=b"c-2", headers=[])

        async def two_dead() -> bool:
            return (
                REGISTRY.get_sample_value(
                    "clinicflow_dlq_depth_records", {"topic": topics.dlq(kind)}
                )
                == 2
            )

        await eventually(two_dead)


async def test_readiness_is_a_gauge_per_check(service_settings: Settings) -> None:
    """`clinicflow_ready` is set from `/readyz`'s checks when `/metrics` is scraped."""
    runtime = ServiceRuntime(service_settings("readycheck"))
    runtime.readiness("held", lambda: False)
    access = runtime.access({})
    app = FastAPI()
    app.include_router(health_router(runtime, access))
    app.dependency_overrides[access.guard] = lambda: None
    transport = httpx.ASGITransport(app=app)
    async with runtime.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://s") as h:

        async def kafka_ready() -> bool:
            await h.get("/metrics")
            return REGISTRY.get_sample_value("clinicflow_ready", {"check": "kafka"}) == 1

        await eventually(kafka_ready)
        assert REGISTRY.get_sample_value("clinicflow_ready", {"check": "held"}) == 0


async def test_requests_are_counted_per_route_template_never_per_path() -> None:
    app = FastAPI()

    @app.get("/v1/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        if thing_id == "broken":
            raise RuntimeError("boom")
        return {"thing_id": thing_id}

    app.add_middleware(HttpMetrics)
    route = "/v1/things/{thing_id}"
    before = {
        status: sample_sum("clinicflow_http_requests_total", route=route, status=status)
        for status in ("2xx", "5xx")
    }
    unmatched = sample_sum("clinicflow_http_requests_total", route="unmatched", status="4xx")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://s") as http:
        ids = [str(uuid.uuid4()) for _ in range(3)]
        for thing_id in ids:
            assert (await http.get(f"/v1/things/{thing_id}")).status_code == 200
        assert (await http.get("/v1/things/broken")).status_code == 500
        assert (await http.get(f"/nowhere/{ids[0]}")).status_code == 404

    assert sample_sum("clinicflow_http_requests_total", route=route, status="2xx") == (
        before["2xx"] + 3
    )
    assert sample_sum("clinicflow_http_requests_total", route=route, status="5xx") == (
        before["5xx"] + 1
    )
    assert (
        sample_sum("clinicflow_http_requests_total", route="unmatched", status="4xx")
        == unmatched + 1
    )
    assert sample_sum("clinicflow_http_request_duration_seconds_count", route=route) >= 4
    labels = {v for f in REGISTRY.collect() for s in f.samples for v in s.labels.values()}
    assert not any(thing_id in value for thing_id in ids for value in labels)


async def test_overdue_aftercare_counts_live_steps_due_over_five_minutes_ago(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    now = datetime.now(UTC)
    await db[STEPS].insert_many(
        [
            {"_id": "timer-stuck", "status": "scheduled", "due_at": now - timedelta(minutes=6)},
            {"_id": "never-sent", "status": "due", "due_at": now - timedelta(hours=2)},
            {"_id": "just-due", "status": "due", "due_at": now - timedelta(minutes=4)},
            {"_id": "later", "status": "scheduled", "due_at": now + timedelta(days=1)},
            {"_id": "left-to-move", "status": "delivered", "due_at": now - timedelta(hours=1)},
        ]
    )
    ctx = cast(NotifierContext, SimpleNamespace(store=NotifierStore(db), clock=lambda: now))

    assert await count_overdue(ctx) == 0  # a periodic step with no backlog of its own
    assert REGISTRY.get_sample_value("clinicflow_aftercare_overdue_steps") == 2
