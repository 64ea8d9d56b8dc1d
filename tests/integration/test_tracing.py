"""One trace from `POST /v1/screenings` at intake, through the outbox and Kafka, to the booking
the scheduler publishes (issue 14; docs/adr/0014). Both services run in this process, so one
in-memory exporter sees every span."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.notifier.app import create_app as create_notifier
from services.scheduler.app import create_app as create_scheduler
from services.scheduler.settings import SchedulerSettings
from shared import tracing
from shared.envelope import build
from shared.events import EventKind, SiteUpdated
from shared.publisher import KafkaPublisher, send_record
from shared.settings import ServiceSettings
from shared.topics import Topics
from tests.conftest import Servers
from tests.integration.test_notifier import completed
from tests.integration.test_notifier import settings_for as notifier_settings
from tests.integration.test_scheduler import PARIS
from tests.support import passing_screening, read_topic, serving, waited_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def databases(
    mongo: AsyncMongoClient[dict[str, Any]], db_name: str
) -> AsyncIterator[tuple[str, str]]:
    """One database per service, as deployed; dropped afterwards."""
    names = (f"{db_name}_intake", f"{db_name}_scheduler")
    yield names
    for name in names:
        await mongo.drop_database(name)


def settings(
    cls: type[ServiceSettings], servers: Servers, topics: Topics, database: str, **extra: Any
) -> Any:
    return cls(
        kafka_bootstrap_servers=servers.kafka_bootstrap_servers,
        mongodb_uri=servers.mongodb_uri,
        mongodb_database=database,
        topic_prefix=topics.prefix,
        environment="test",
        topic_partitions=3,
        **extra,
    )


def intake_settings(servers: Servers, topics: Topics, database: str) -> IntakeSettings:
    key = SecretStr(Fernet.generate_key().decode())
    found: IntakeSettings = settings(IntakeSettings, servers, topics, database, health_key=key)
    return found


async def test_one_trace_from_the_screening_request_to_the_booking(
    spans: InMemorySpanExporter, servers: Servers, topics: Topics, databases: tuple[str, str]
) -> None:
    bootstrap = servers.kafka_bootstrap_servers
    scheduler = create_scheduler(settings(SchedulerSettings, servers, topics, databases[1]))
    async with serving(scheduler) as scheduler_http:
        assert (await scheduler_http.put("/v1/sites/paris-01", json=PARIS)).status_code == 201
        await read_topic(bootstrap, topics.name(EventKind.SITE_UPDATED), expect=1, settle=0)
        intake = create_intake(intake_settings(servers, topics, databases[0]))
        async with serving(intake) as intake_http:
            spans.clear()
            passed_topic = topics.name(EventKind.SCREENING_PASSED)
            response = await intake_http.post("/v1/screenings", json=passing_screening())
            assert response.status_code == 201
            [scheduled] = await read_topic(
                bootstrap, topics.name(EventKind.SESSION_SCHEDULED), expect=1, settle=0
            )
            booking = await waited_for(
                lambda: _found(spans, _consumer_of(passed_topic, "scheduler"))
            )

    finished = spans.get_finished_spans()
    by_id = {span.context.span_id: span for span in finished}
    [request] = [s for s in finished if s.kind is SpanKind.SERVER]
    assert request.name == "POST /v1/screenings"
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/v1/screenings"
    assert request.attributes["http.response.status_code"] == 201
    trace_id = request.context.trace_id

    chain = [booking]
    while (parent := chain[-1].parent) is not None:
        assert parent.trace_id == trace_id
        chain.append(by_id[parent.span_id])
    assert chain[-1] is request, [s.name for s in chain]
    assert {s.context.trace_id for s in chain} == {trace_id}
    assert booking.kind is SpanKind.CONSUMER
    assert booking.name == f"process {passed_topic}"
    assert booking.attributes is not None
    assert booking.attributes["messaging.system"] == "kafka"
    assert booking.attributes["messaging.destination.name"] == passed_topic
    [passed] = await read_topic(bootstrap, passed_topic, expect=1, settle=0)
    passed_event = json.loads(passed.value)
    assert booking.attributes["messaging.message.id"] == passed_event["id"]
    sent = [s for s in finished if s.kind is SpanKind.PRODUCER and s.name == f"send {passed_topic}"]
    assert [s.parent.span_id for s in sent if s.parent] == [request.context.span_id]

    event = json.loads(scheduled.value)
    version, traced, parent_id, _flags = event["traceparent"].split("-")
    assert (version, int(traced, 16)) == ("00", trace_id)
    assert int(parent_id, 16) == booking.context.span_id
    assert {s.context.trace_id for s in finished} == {trace_id}
    _no_personal_data(finished)


async def test_the_trace_goes_on_to_the_aftercare_delivery(
    spans: InMemorySpanExporter, servers: Servers, topics: Topics, databases: tuple[str, str]
) -> None:
    notifier = create_notifier(notifier_settings(servers, topics, databases[0]))
    session = completed("c-traced", ago=timedelta(minutes=1))
    async with serving(notifier):
        with tracing.span("complete session") as completing:
            assert completing is not None
            record = build(session, source="scheduler", prefix=topics.prefix)
        publisher = KafkaPublisher(servers.kafka_bootstrap_servers, "tests")
        await publisher.start()
        try:
            await send_record(publisher, record)
        finally:
            await publisher.stop()

        def delivered(span: ReadableSpan) -> bool:
            return span.name == "deliver log" and span.context.trace_id == root.trace_id

        root = completing.get_span_context()
        delivery = await waited_for(lambda: _found(spans, delivered))

    by_id = {span.context.span_id: span for span in spans.get_finished_spans()}
    chain = [delivery]
    while (parent := chain[-1].parent) is not None and parent.span_id in by_id:
        chain.append(by_id[parent.span_id])
    assert [s.name for s in chain] == [
        "deliver log",
        f"process {topics.name(EventKind.AFTERCARE_DUE)}",
        "release aftercare step",
        f"process {topics.name(EventKind.SESSION_COMPLETED)}",
        "complete session",
    ]
    assert {s.context.trace_id for s in chain} == {root.trace_id}
    _no_personal_data(spans.get_finished_spans())


async def test_tracing_off_exports_nothing_and_events_carry_no_trace(
    servers: Servers, topics: Topics, databases: tuple[str, str]
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(None)
    assert tracing.provider_from_env("intake", {}) is None
    bootstrap = servers.kafka_bootstrap_servers
    await _publish_site(servers, topics)
    intake = create_intake(intake_settings(servers, topics, databases[0]))
    async with serving(intake) as http:
        assert (await http.post("/v1/screenings", json=passing_screening())).status_code == 201
        [passed] = await read_topic(
            bootstrap, topics.name(EventKind.SCREENING_PASSED), expect=1, settle=0
        )
    assert "traceparent" not in json.loads(passed.value)
    assert exporter.get_finished_spans() == ()
    provider.shutdown()


async def _publish_site(servers: Servers, topics: Topics) -> None:
    publisher = KafkaPublisher(servers.kafka_bootstrap_servers, "tests")
    await publisher.start()
    try:
        site = SiteUpdated.model_validate({"site_id": "paris-01", **PARIS})
        await send_record(publisher, build(site, source="scheduler", prefix=topics.prefix))
    finally:
        await publisher.stop()


def _consumer_of(topic: str, service: str) -> Any:
    def matches(span: ReadableSpan) -> bool:
        attributes = span.attributes or {}
        group = str(attributes.get("messaging.consumer.group.name", ""))
        return (
            span.kind is SpanKind.CONSUMER
            and attributes.get("messaging.destination.name") == topic
            and group.endswith(f".{service}")
        )

    return matches


async def _found(exporter: InMemorySpanExporter, matches: Any) -> ReadableSpan | None:
    return next((s for s in exporter.get_finished_spans() if matches(s)), None)


def _no_personal_data(spans: tuple[ReadableSpan, ...]) -> None:
    """Names, contacts and health answers of the screening never reach a span."""
    request = passing_screening()
    secrets = [request["client"]["full_name"], request["client"]["email"], "acne_scars"]
    for span in spans:
        text = span.to_json()
        assert not [s for s in secrets if s in text], span.name
