"""Test helpers: read what really landed on a Kafka topic, and wait for a condition."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI

from services.intake.domain.questionnaire import HealthAnswers
from tests.access import staff

T = TypeVar("T")

NO_CONTRAINDICATION = dict.fromkeys(HealthAnswers.model_fields, False)
"""Every health answer `false`: a questionnaire that passes screening."""


def passing_screening(site_id: str = "paris-01", **client: Any) -> dict[str, Any]:
    """A `POST /v1/screenings` body that passes, for Ana at `site_id`; `client` overrides."""
    return {
        "site_id": site_id,
        "client": {"full_name": "Ana Silva", "email": "ana@example.org", "locale": "fr", **client},
        "treatment": {"areas": ["face"], "concerns": ["acne_scars"], "severity": "severe"},
        "skin": {"sensitivity": "normal"},
        "health": NO_CONTRAINDICATION,
        "consent": {"treatment": True, "data_processing": True},
    }


async def read_topic(
    bootstrap: str, topic: str, *, expect: int, within: float = 30.0, settle: float = 1.0
) -> list[Any]:
    """Every record of `topic` from the beginning: waits for `expect` records, then `settle`
    seconds more so that an unexpected extra record (a duplicate) is seen too."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + within
        partitions: set[int] | None = None
        while not partitions and time.monotonic() < deadline:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await asyncio.sleep(0.2)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(*tps, timeout_ms=200)
            for items in batch.values():
                records.extend(items)
            if len(records) >= expect:
                settle_until = settle_until or time.monotonic() + settle
                if time.monotonic() >= settle_until:
                    break
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    """Poll `check` until it holds; fail the test if it does not within `within` seconds."""
    for _ in range(int(within / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition still false after {within}s")


async def waited_for(find: Callable[[], Awaitable[T | None]], within: float = 30.0) -> T:
    """Poll `find` until it finds something, and return that; fail the test after `within`."""
    for _ in range(int(within / 0.1)):
        if (found := await find()) is not None:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"nothing found after {within}s")


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run a service app in this process (its lifespan included) and wait until it is ready.

    The client authenticates as clinic staff (`tests.access.StaffAuth`) with keys published
    before the service starts, so a ready service knows them.
    """
    settings = app.state.runtime.settings
    auth = await staff(settings.kafka_bootstrap_servers, settings.topic_prefix)
    async with app.state.runtime.lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://service", auth=auth
        ) as http:

            async def ready() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await eventually(ready)
            yield http
