"""OpenTelemetry traces from an HTTP request through the outbox and Kafka to each consumer and
the aftercare delivery (docs/adr/0014).

Off unless the standard `OTEL_*` variables ask for an exporter: the process then has no tracer,
every helper here returns at once, and events carry no `traceparent`. On, the trace context
travels inside each event as the CloudEvents distributed-tracing attributes `traceparent` and
`tracestate` (W3C Trace Context), captured when the event is built, inside the span of the
request or handler that caused it. The stored bytes carry it, so a relay that publishes them
later, in another process after a crash, still continues the right trace.

One tracer per process: a service runs alone in production, and tests that run several apps in
one process install one in-memory provider for all of them (`install`).

Spans carry ids, topics, routes and status codes only: never names, contacts, health answers,
reason codes, texts, or exception messages (an SMTP error can quote an address).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

TRACE_ATTRIBUTES = ("traceparent", "tracestate")
"""The CloudEvents distributed-tracing extension attributes, also the W3C HTTP headers."""
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v1/ops/stream"})
"""Probes and scrapes every few seconds would bury the workflow's traces, and the ops page's
stream would be one span as long as the page stays open."""

_propagator = TraceContextTextMapPropagator()
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def provider_from_env(
    service_name: str, environ: Mapping[str, str] = os.environ
) -> TracerProvider | None:
    """The provider the `OTEL_*` variables ask for, or None (tracing off).

    On when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`) or an OTLP endpoint is
    set, unless `OTEL_SDK_DISABLED=true` or the exporter is `none`. The OTLP exporter speaks
    http/protobuf and reads its own variables (endpoint, headers, timeout, compression), the
    provider its sampler (`OTEL_TRACES_SAMPLER`) and resource (`OTEL_RESOURCE_ATTRIBUTES`,
    `OTEL_SERVICE_NAME`, by default `clinicflow-<service>`).
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n]
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if "none" in names or not (names or endpoint):
        return None
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        log.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; using http/protobuf", protocol
        )
    exporters = [_exporter(name) for name in names or ["otlp"]]
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: f"clinicflow-{service_name}"}))
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _exporter(name: str) -> SpanExporter:
    if name == "otlp":
        # Imported only when used: it loads protobuf and requests.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == "console":
        return ConsoleSpanExporter()
    raise ValueError(f"OTEL_TRACES_EXPORTER={name} is not supported: use otlp, console or none")


def configure(service_name: str) -> None:
    """Trace this process as the environment says, unless a provider is installed already
    (a test's, or that of another service started in the same process)."""
    if _tracer is None:
        install(provider_from_env(service_name))


def install(provider: TracerProvider | None) -> None:
    """Trace with `provider` from now on; None turns tracing off. Tests install a provider with
    an in-memory exporter before they create the apps (the HTTP middleware is added then)."""
    global _tracer, _provider
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer("clinicflow")


def enabled() -> bool:
    return _tracer is not None


def flush() -> None:
    """Export what is buffered (a service stopping); the provider also flushes at exit."""
    if _provider is not None:
        _provider.force_flush()


def carrier() -> dict[str, str]:
    """The current span's context as `traceparent` (and `tracestate`), for an event built now;
    empty when tracing is off or no span is active."""
    found: dict[str, str] = {}
    if _tracer is not None:
        _propagator.inject(found)
    return found


def traceparent() -> str | None:
    """The current span's `traceparent`, kept on work that runs later outside it (a delivery
    attempt, an aftercare step falling due)."""
    return carrier().get("traceparent")


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: Mapping[str, str | None] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[Span | None]:
    """A current span, child of `parent` (W3C `traceparent`/`tracestate`) when given, else of
    the current one; None when tracing is off. An exception marks it failed by type only."""
    if _tracer is None:
        yield None
        return
    context = None if parent is None else _propagator.extract(_present(parent))
    with _tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def consuming(
    topic: str, *, event_id: str, trace: Mapping[str, str | None], group: str, partition: int
) -> contextlib.AbstractContextManager[Span | None]:
    """The CONSUMER span of handling one event, child of the span that built it."""
    return span(
        f"process {topic}",
        parent=trace,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(partition),
            "messaging.consumer.group.name": group,
            "messaging.message.id": event_id,
        },
    )


@contextlib.contextmanager
def publishing(entries: Sequence[Mapping[str, Any]]) -> Iterator[None]:
    """PRODUCER spans for outbox entries being sent, each a child of the context stored in its
    event, ending when the broker has acknowledged the batch. Entries that carry no context
    (built with tracing off, tombstones, audit entries) get none."""
    if _tracer is None:
        yield
        return
    spans = [
        _tracer.start_span(
            f"send {entry['topic']}",
            context=_propagator.extract(stored),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": str(entry["topic"]),
                "messaging.message.id": str(entry["id"]),
            },
        )
        for entry in entries
        if (stored := _stored_trace(entry))
    ]
    try:
        yield
    except BaseException as exc:
        for sent in spans:
            sent.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        for sent in spans:
            sent.end()


def _stored_trace(entry: Mapping[str, Any]) -> dict[str, str]:
    value = entry.get("value")
    if not isinstance(value, str) or '"traceparent"' not in value:
        return {}
    try:
        document = json.loads(value)
    except ValueError:
        return {}
    return _present({name: document.get(name) for name in TRACE_ATTRIBUTES})


def _present(trace: Mapping[str, Any]) -> dict[str, str]:
    return {k: v for k, v in trace.items() if k in TRACE_ATTRIBUTES and isinstance(v, str) and v}


class TracingMiddleware:
    """A SERVER span per HTTP request, named after the route template (`POST /v1/screenings`),
    continuing a caller's W3C `traceparent` header.

    Our own ASGI middleware rather than opentelemetry-instrumentation-fastapi: that package
    records the full URL, the client's address and user agent, needs a provider fixed when the
    app is built (ours comes from the environment or a test), and brings five packages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _tracer is None or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        method = str(scope["method"])
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name.decode("latin-1") in TRACE_ATTRIBUTES
        }
        status: list[int] = []

        async def send_noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        with span(
            method,
            parent=headers,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.scheme": str(scope["scheme"])},
        ) as current:
            assert current is not None
            try:
                await self.app(scope, receive, send_noting_status)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if isinstance(route, str):
                    current.update_name(f"{method} {route}")
                    current.set_attribute("http.route", route)
                if status:
                    current.set_attribute("http.response.status_code", status[0])
                    if status[0] >= 500:
                        current.set_status(Status(StatusCode.ERROR))
