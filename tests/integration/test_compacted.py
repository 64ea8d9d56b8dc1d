"""The in-memory view of a compacted topic, against the real Kafka broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from scripts import infra
from shared.compacted import CompactedView
from shared.envelope import Record, build, data_parser, tombstone
from shared.events import ClientContact, EventKind, SiteUpdated
from shared.examples import EXAMPLES
from shared.publisher import KafkaPublisher, send_record
from shared.runtime import ServiceRuntime
from shared.settings import ServiceSettings
from shared.topics import Topics, ensure_topics
from tests.conftest import Servers
from tests.support import eventually, read_topic

pytestmark = pytest.mark.integration

Changes = list[tuple[str, object, bool]]


def site(site_id: str, name: str) -> SiteUpdated:
    example = EXAMPLES[EventKind.SITE_UPDATED]
    assert isinstance(example, SiteUpdated)
    return example.model_copy(update={"site_id": site_id, "name": name})


def contact(client_id: str, full_name: str = "Ana Silva") -> ClientContact:
    example = EXAMPLES[EventKind.CLIENT_CONTACT]
    assert isinstance(example, ClientContact)
    return example.model_copy(update={"client_id": client_id, "full_name": full_name})


def parse_site(prefix: str) -> Callable[[bytes], SiteUpdated]:
    return data_parser(SiteUpdated, prefix=prefix)


def parse_contact(prefix: str) -> Callable[[bytes], ClientContact]:
    return data_parser(ClientContact, prefix=prefix)


def site_view(
    servers: Servers, topics: Topics, changes: Changes | None = None
) -> CompactedView[SiteUpdated]:
    view: CompactedView[SiteUpdated]

    async def on_change(key: str, value: SiteUpdated | None) -> None:
        assert changes is not None
        changes.append((key, value, view.caught_up))

    view = CompactedView(
        servers.kafka_bootstrap_servers,
        topics.name(EventKind.SITE_UPDATED),
        parse_site(topics.prefix),
        on_change=on_change if changes is not None else None,
    )
    return view


@contextlib.asynccontextmanager
async def running(view: CompactedView[Any]) -> AsyncIterator[None]:
    """Run the view for the block; a crash of run() surfaces when the task is awaited."""
    task = asyncio.create_task(view.run())
    try:
        yield
        assert not task.done(), "run() must keep running"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def publish(publisher: KafkaPublisher, *records: Record) -> None:
    for record in records:
        await send_record(publisher, record)


def site_record(topics: Topics, data: SiteUpdated) -> Record:
    return build(data, source="scheduler", prefix=topics.prefix)


async def _holds(value: bool) -> bool:
    return value


async def test_a_view_catches_up_with_the_latest_version_of_every_site(
    servers: Servers, topics: Topics, publisher: KafkaPublisher
) -> None:
    published = [
        site("paris-01", "Paris v1"),
        site("nyc-01", "New York"),
        site("paris-01", "Paris v2"),
        site("lyon-01", "Lyon"),
        site("paris-01", "Paris v3"),
    ]
    await publish(publisher, *(site_record(topics, s) for s in published))
    changes: Changes = []
    view = site_view(servers, topics, changes)
    assert not view.caught_up

    async with running(view):
        assert await view.wait_caught_up(timeout=30)
        # Caught up means everything published before the start is in the view already.
        assert view.items() == {
            "paris-01": published[4],
            "nyc-01": published[1],
            "lyon-01": published[3],
        }
        assert len(view) == 3
        assert "paris-01" in view
        assert "marseille-01" not in view
        assert view.get("marseille-01") is None
        got = view.get("paris-01")
        assert got is not None
        assert got.name == "Paris v3"

    assert len(changes) == 5, "every record reached on_change"
    assert not any(caught for _key, _value, caught in changes), (
        "the view was caught up before it had read what was published before its start"
    )
    paris = [value for key, value, _caught in changes if key == "paris-01"]
    assert paris == [published[0], published[2], published[4]], "one partition, in order"


async def test_items_is_a_copy(servers: Servers, topics: Topics, publisher: KafkaPublisher) -> None:
    await publish(publisher, site_record(topics, site("paris-01", "Paris")))
    view = site_view(servers, topics)
    async with running(view):
        assert await view.wait_caught_up(timeout=30)
        copy = view.items()
        copy.clear()
        assert len(view) == 1


async def test_an_empty_topic_is_caught_up_quickly(servers: Servers, topics: Topics) -> None:
    view = site_view(servers, topics)
    async with running(view):
        assert await view.wait_caught_up(timeout=10)
        assert len(view) == 0
        assert view.items() == {}


async def test_records_published_after_catch_up_are_applied(
    servers: Servers, topics: Topics, publisher: KafkaPublisher
) -> None:
    first = site("paris-01", "Paris")
    await publish(publisher, site_record(topics, first))
    changes: Changes = []
    view = site_view(servers, topics, changes)
    async with running(view):
        assert await view.wait_caught_up(timeout=30)
        assert changes == [("paris-01", first, False)]

        renamed = site("paris-01", "Paris Bastille")
        added = site("nyc-01", "New York")
        await publish(publisher, site_record(topics, renamed), site_record(topics, added))
        await eventually(lambda: _holds(len(changes) == 3))
        assert view.items() == {"paris-01": renamed, "nyc-01": added}
        assert sorted(changes[1:], key=lambda c: c[0]) == [
            ("nyc-01", added, True),
            ("paris-01", renamed, True),
        ]
        assert view.caught_up


async def test_a_tombstone_removes_the_key(
    servers: Servers, topics: Topics, publisher: KafkaPublisher
) -> None:
    prefix = topics.prefix
    kind = EventKind.CLIENT_CONTACT
    gone_before = contact("c-gone-before")
    kept = contact("c-kept", "Kept Client")
    erased = contact("c-erased", "Erased Client")
    await publish(
        publisher,
        build(gone_before, source="intake", prefix=prefix),
        build(kept, source="intake", prefix=prefix),
        build(erased, source="intake", prefix=prefix),
        tombstone(kind, "c-gone-before", prefix=prefix),
    )
    changes: list[tuple[str, ClientContact | None]] = []

    async def on_change(key: str, value: ClientContact | None) -> None:
        changes.append((key, value))

    view = CompactedView(
        servers.kafka_bootstrap_servers,
        topics.name(kind),
        parse_contact(prefix),
        on_change=on_change,
    )
    async with running(view):
        assert await view.wait_caught_up(timeout=30)
        assert view.items() == {"c-kept": kept, "c-erased": erased}
        assert ("c-gone-before", None) in changes

        await publish(publisher, tombstone(kind, "c-erased", prefix=prefix))
        await eventually(lambda: _holds("c-erased" not in view))
        assert view.get("c-erased") is None
        assert view.items() == {"c-kept": kept}
        assert changes[-1] == ("c-erased", None)


async def test_a_malformed_record_is_skipped_and_later_ones_apply(
    servers: Servers,
    topics: Topics,
    publisher: KafkaPublisher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="shared.compacted")
    topic = topics.name(EventKind.SITE_UPDATED)
    first = site("paris-01", "Paris")
    after = site("paris-01", "Paris after the bad record")
    await publish(publisher, site_record(topics, first))
    # Same key, so the same partition: the records after it must still be read.
    await publisher.send(topic, b"not json", key=b"paris-01", headers=[])
    await publisher.send(topic, b"not json either", key=b"bad-01", headers=[])
    await publish(publisher, site_record(topics, after))

    view = site_view(servers, topics)
    async with running(view):
        assert await view.wait_caught_up(timeout=30)
        assert view.items() == {"paris-01": after}

        await publisher.send(topic, b"not json", key=b"paris-01", headers=[])
        later = site("paris-01", "Paris later")
        await publish(publisher, site_record(topics, later))
        await eventually(lambda: _holds(view.get("paris-01") == later))
        assert "bad-01" not in view

    skipped = [
        r for r in caplog.records if r.name == "shared.compacted" and "does not parse" in r.message
    ]
    assert len(skipped) == 3
    assert all(r.levelno == logging.ERROR for r in skipped)
    assert not any("not json" in r.getMessage() for r in caplog.records)


async def test_the_view_waits_for_its_topic_to_be_created(
    servers: Servers, topic_prefix: str
) -> None:
    topics = Topics(topic_prefix)
    view = site_view(servers, topics)
    async with running(view):
        await asyncio.sleep(1.5)
        assert not view.caught_up, "a topic that does not exist yet has not been read"
        await ensure_topics(servers.kafka_bootstrap_servers, topics, partitions=3)
        publisher = KafkaPublisher(servers.kafka_bootstrap_servers, "tests")
        await publisher.start()
        try:
            paris = site("paris-01", "Paris")
            await publish(publisher, site_record(topics, paris))
            assert await view.wait_caught_up(timeout=30)
            await eventually(lambda: _holds(view.get("paris-01") == paris))
        finally:
            await publisher.stop()


async def test_the_view_keeps_trying_while_kafka_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="shared.compacted")
    view: CompactedView[SiteUpdated] = CompactedView(
        f"127.0.0.1:{infra.free_port()}", "clinic.site_updated", parse_site("clinic.")
    )
    async with running(view):
        assert not await view.wait_caught_up(timeout=2)
    warnings = [r for r in caplog.records if r.name == "shared.compacted"]
    assert warnings, "an unreachable Kafka is reported"
    assert all(r.exc_info is None for r in warnings), "no stack traces for an expected outage"


async def test_readyz_includes_registered_checks(servers: Servers) -> None:
    settings = ServiceSettings().model_copy(
        update={
            "kafka_bootstrap_servers": servers.kafka_bootstrap_servers,
            "mongodb_uri": servers.mongodb_uri,
        }
    )
    runtime = ServiceRuntime(settings)
    caught_up = False
    runtime.readiness("sites", lambda: caught_up)
    with pytest.raises(ValueError, match="already defined"):
        runtime.readiness("sites", lambda: True)
    with pytest.raises(ValueError, match="already defined"):
        runtime.readiness("kafka", lambda: True)
    try:
        checks = await runtime.ready()
        assert checks["sites"] is False
        assert set(checks) == {"kafka", "mongodb", "started", "sites"}
        caught_up = True
        assert (await runtime.ready())["sites"] is True
    finally:
        await runtime.mongo.close()


async def test_a_record_no_view_can_read_goes_to_the_dlq_once(
    servers: Servers,
    topics: Topics,
    publisher: KafkaPublisher,
    db: Any,
    service_settings: Callable[[str], ServiceSettings],
) -> None:
    """Every replica reads every record of a view, on every start: the bad one still shows
    once in the DLQ (SPEC section 2: nothing is dropped silently)."""
    topic = topics.name(EventKind.SITE_UPDATED)
    await publisher.send(topic, b"not json", key=b"bad-01", headers=[("trace", b"t9")])
    settings = service_settings("viewer")
    replicas = [ServiceRuntime(settings) for _ in range(2)]
    try:
        for runtime in replicas:
            await runtime.publisher.start()
        for round_ in ("start", "restart"):
            views = [site_view(servers, topics) for _ in replicas]
            for runtime, view in zip(replicas, views, strict=True):
                runtime.view(f"sites-{round_}", view)
            async with running(views[0]), running(views[1]):
                for view in views:
                    assert await view.wait_caught_up(timeout=30)
        dead = await read_topic(servers.kafka_bootstrap_servers, f"{topic}.dlq", expect=1)
    finally:
        for runtime in replicas:
            await runtime.publisher.stop()
            await runtime.mongo.close()
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert dead[0].value == b"not json"
    assert headers["dlq-consumer-group"] == f"{topics.prefix}viewer-view".encode()
    assert headers["trace"] == b"t9"
