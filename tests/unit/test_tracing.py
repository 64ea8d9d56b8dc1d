"""Tracing (`shared.tracing`): off unless `OTEL_*` asks, and the trace context carried in the
envelope from the span that built an event to the spans that publish and consume it."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import tracing
from shared.envelope import build, parse
from shared.events import EventKind
from shared.examples import EXAMPLES
from shared.outbox import entries

PREFIX = "clinic."
CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SERVICE_NAME": "intake"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_tracing_is_off_unless_an_exporter_is_asked_for(environ: dict[str, str]) -> None:
    assert tracing.provider_from_env("intake", environ) is None


def test_an_otlp_endpoint_turns_tracing_on_with_the_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    provider = tracing.provider_from_env("scheduler", environ)
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "clinicflow-scheduler"
    provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "paris-scheduler")
    provider = tracing.provider_from_env("scheduler", {"OTEL_TRACES_EXPORTER": "console"})
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "paris-scheduler"
    provider.shutdown()


def test_an_unknown_exporter_is_named() -> None:
    with pytest.raises(ValueError, match="zipkin"):
        tracing.provider_from_env("intake", {"OTEL_TRACES_EXPORTER": "zipkin"})


def test_off_an_event_carries_no_trace_even_inside_a_span() -> None:
    tracing.install(None)
    with tracing.span("work") as current:
        assert current is None
        record = build(EXAMPLES[EventKind.SCREENING_PASSED], source="intake", prefix=PREFIX)
    assert record.value is not None
    assert "traceparent" not in json.loads(record.value)


def test_an_event_carries_the_span_that_built_it_to_its_consumer(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.span("request") as request:
        assert request is not None
        record = build(EXAMPLES[EventKind.SCREENING_PASSED], source="intake", prefix=PREFIX)
    assert record.value is not None
    document = json.loads(record.value)
    built_in = request.get_span_context()
    assert document["traceparent"].startswith(
        f"00-{built_in.trace_id:032x}-{built_in.span_id:016x}-"
    )
    assert "tracestate" not in document

    with tracing.publishing(entries([record])):
        pass
    event = parse(record.value, prefix=PREFIX)
    with tracing.consuming(
        record.topic, event_id=event.id, trace=event.trace, group="clinic.scheduler", partition=0
    ):
        follow_up = build(EXAMPLES[EventKind.SESSION_SCHEDULED], source="scheduler", prefix=PREFIX)
    assert follow_up.value is not None

    sent, consumed = spans.get_finished_spans()[1:]
    assert (sent.kind, sent.name) == (SpanKind.PRODUCER, f"send {record.topic}")
    assert (consumed.kind, consumed.name) == (SpanKind.CONSUMER, f"process {record.topic}")
    for child in (sent, consumed):
        assert child.parent is not None
        assert (child.parent.trace_id, child.parent.span_id) == (
            built_in.trace_id,
            built_in.span_id,
        )
        assert child.attributes is not None
        assert child.attributes["messaging.message.id"] == event.id
    assert consumed.context is not None
    followed = json.loads(follow_up.value)["traceparent"].split("-")
    assert int(followed[1], 16) == built_in.trace_id
    assert int(followed[2], 16) == consumed.context.span_id


def test_a_malformed_traceparent_is_ignored_not_dead_lettered(
    spans: InMemorySpanExporter,
) -> None:
    record = build(EXAMPLES[EventKind.SCREENING_PASSED], source="intake", prefix=PREFIX)
    assert record.value is not None
    value = json.loads(record.value) | {"traceparent": "not-a-trace", "tracestate": 7}
    event = parse(json.dumps(value).encode(), prefix=PREFIX)
    with tracing.consuming("t", event_id=event.id, trace=event.trace, group="g", partition=0):
        pass
    [consumed] = spans.get_finished_spans()
    assert consumed.parent is None


async def test_http_spans_are_named_by_route_and_continue_the_caller(
    spans: InMemorySpanExporter,
) -> None:
    app = FastAPI()
    app.add_middleware(tracing.TracingMiddleware)

    @app.get("/v1/plans/{plan_id}")
    async def plan(plan_id: str) -> dict[str, str]:
        return {"plan_id": plan_id}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {}

    @app.get("/v1/ops/stream")
    async def stream() -> dict[str, str]:
        return {}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
        assert (await http.get("/v1/plans/p-1?x=1", headers={"traceparent": CALLER})).is_success
        assert (await http.get("/healthz")).is_success
        assert (await http.get("/v1/ops/stream")).is_success
        assert (await http.get("/nowhere")).status_code == 404

    served, missing = spans.get_finished_spans()
    assert (served.kind, served.name) == (SpanKind.SERVER, "GET /v1/plans/{plan_id}")
    assert served.attributes is not None
    assert served.attributes["http.response.status_code"] == 200
    assert "p-1" not in served.to_json()
    assert served.parent is not None
    assert served.parent.trace_id == int(CALLER.split("-")[1], 16)
    assert missing.name == "GET"
    assert missing.parent is None
