"""A service's start-up order against the real broker and MongoDB-wire server."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from shared.compacted import CompactedView
from shared.deadletter import RawRecord
from shared.envelope import build
from shared.events import EventKind
from shared.examples import EXAMPLES
from shared.publisher import KafkaPublisher, send_record
from shared.runtime import ServiceRuntime
from shared.settings import ServiceSettings
from shared.topics import Topics
from tests.conftest import Servers
from tests.support import eventually

pytestmark = pytest.mark.integration


class HeldView:
    """A compacted view the test lets catch up when it chooses."""

    def __init__(self) -> None:
        self.done = asyncio.Event()

    @property
    def caught_up(self) -> bool:
        return self.done.is_set()

    async def wait_caught_up(self) -> bool:
        await self.done.wait()
        return True

    async def run(self) -> None:
        await asyncio.Event().wait()


async def test_nothing_acts_on_events_before_every_view_has_caught_up(
    servers: Servers, topics: Topics, db_name: str, publisher: KafkaPublisher
) -> None:
    """A handler or timer that ran while the contacts view was half read would treat a known
    client as unknown (issue 12): the subscribers and `after_views` workers wait for it."""
    settings = ServiceSettings(
        kafka_bootstrap_servers=servers.kafka_bootstrap_servers,
        mongodb_uri=servers.mongodb_uri,
        mongodb_database=db_name,
        topic_prefix=topics.prefix,
        environment="test",
        topic_partitions=3,
        service_name="gatecheck",
    )
    runtime = ServiceRuntime(settings)
    view = HeldView()
    runtime.view("contacts", cast(CompactedView[Any], view))
    handled: list[str] = []
    timer_runs: list[int] = []

    async def on_record(record: RawRecord) -> None:
        handled.append(record.topic)

    async def timer() -> None:
        timer_runs.append(1)
        await asyncio.Event().wait()

    runtime.consumer().subscribe_records(
        runtime.broker, topics.name(EventKind.SESSION_COMPLETED), on_record
    )
    runtime.worker(timer, after_views=True)
    connected = asyncio.Event()

    async def started_up() -> None:
        connected.set()

    runtime.on_start(started_up)
    completed = EXAMPLES[EventKind.SESSION_COMPLETED]
    await send_record(publisher, build(completed, source="scheduler", prefix=topics.prefix))

    async with runtime.lifespan():
        await asyncio.wait_for(connected.wait(), timeout=60)
        await asyncio.sleep(3)  # time enough to join, fetch and handle, were it subscribed
        assert handled == [], "a record was handled before the view caught up"
        assert timer_runs == [], "a timer ran before the view caught up"
        assert not (await runtime.ready())["contacts"]

        view.done.set()

        async def consumed() -> bool:
            return bool(handled) and bool(timer_runs)

        await eventually(consumed)
        assert all((await runtime.ready()).values())
