"""A service's start-up order against the real broker and MongoDB-wire server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest

from shared.aggregate import Aggregate
from shared.compacted import CompactedView
from shared.deadletter import RawRecord
from shared.envelope import build
from shared.events import EventKind
from shared.examples import EXAMPLES
from shared.publisher import KafkaPublisher, send_record
from shared.runtime import ServiceRuntime
from shared.settings import ServiceSettings
from shared.topics import Topics
from shared.uow import AggregateStore
from tests.conftest import Servers
from tests.support import eventually, read_topic

pytestmark = pytest.mark.integration
Settings = Callable[[str], ServiceSettings]


class HeldView:
    """A compacted view the test lets catch up when it chooses."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.topic = "held"

    @property
    def caught_up(self) -> bool:
        return self.done.is_set()

    async def wait_caught_up(self) -> bool:
        await self.done.wait()
        return True

    async def run(self) -> None:
        await asyncio.Event().wait()


async def test_nothing_acts_on_events_before_every_view_has_caught_up(
    topics: Topics, publisher: KafkaPublisher, service_settings: Settings
) -> None:
    """A handler or timer that ran while the contacts view was half read would treat a known
    client as unknown (issue 12): the subscribers and `after_views` workers wait for it."""
    settings = service_settings("gatecheck")
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


class Note(Aggregate):
    """A test aggregate created with one event."""

    note_id: str


async def test_a_stopping_service_finishes_what_it_started_and_publishes_it(
    servers: Servers, topics: Topics, db: Any, publisher: KafkaPublisher, service_settings: Settings
) -> None:
    """SIGTERM (the lifespan ending) while a handler runs: it finishes, its offset is
    committed, and the change it made is published before the process exits (issue 12)."""
    settings = service_settings("drainer")
    topic = topics.name(EventKind.SESSION_COMPLETED)
    completed = EXAMPLES[EventKind.SESSION_COMPLETED]
    await send_record(publisher, build(completed, source="scheduler", prefix=topics.prefix))
    contact = EXAMPLES[EventKind.CLIENT_CONTACT]
    handled: list[str] = []

    def service() -> tuple[ServiceRuntime, asyncio.Event]:
        runtime = ServiceRuntime(settings)
        uow = runtime.unit_of_work("notes")
        notes = AggregateStore(runtime.db["notes"], Note, "note_id")
        started = asyncio.Event()

        async def on_record(record: RawRecord) -> None:
            started.set()
            await asyncio.sleep(1.0)  # still running when the stop comes
            note = Note(note_id=f"n-{record.offset}")
            note.attach(build(contact, source="drainer", prefix=topics.prefix))
            await uow.add(notes, note)
            handled.append(note.note_id)

        runtime.consumer().subscribe_records(runtime.broker, topic, on_record)
        return runtime, started

    first, started = service()
    async with first.lifespan():
        await asyncio.wait_for(started.wait(), timeout=60)
    assert len(handled) == 1, "the handler was cut short"
    assert await db["notes"].count_documents({}) == 1
    contacts = await read_topic(
        servers.kafka_bootstrap_servers, topics.name(EventKind.CLIENT_CONTACT), expect=1
    )
    assert len(contacts) == 1, "the change was not published before exit"
    assert await db["locks"].count_documents({}) == 0, "its lease was left to expire"

    again, started_again = service()
    async with again.lifespan():
        await asyncio.sleep(4)  # time to join the group and be handed anything uncommitted
    assert not started_again.is_set(), "the record was delivered again: its offset was lost"
