"""CloudEvents 1.0 structured-mode envelope and the Kafka record it travels in (SPEC section 2).

An event is built once, with a stable `id`, and stored in an outbox as the exact bytes that will
be published; a retry republishes those bytes, so the id never changes across retries.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, Field, ValidationError

from shared import tracing
from shared.events import COMPACTED, EVENT_MODELS, TOLERANT, EventData, EventKind, kind_of
from shared.vocabulary import SiteId, UtcDatetime

DataT = TypeVar("DataT", bound=EventData)
CONTENT_TYPE = "application/cloudevents+json"
SCHEMA_VERSION = "v1"
OPTIONAL_ATTRIBUTES = ("causationid", "traceparent", "tracestate")
"""Envelope attributes left out, rather than null, when they have no value."""


def dataschema_for(kind: EventKind) -> str:
    """The schema URI of an event; `docs/schemas/<kind>.v1.json` holds the document it names."""
    return f"urn:clinicflow:schema:{kind.value}:{SCHEMA_VERSION}"


def _string_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


TraceAttribute = Annotated[str | None, BeforeValidator(_string_or_none)]
"""A trace attribute is read leniently: one of another type, from elsewhere, counts as absent
rather than sending the event to the DLQ."""


class CloudEvent(BaseModel):
    """The envelope attributes clinicflow sets on every event, with its `data`. Extension
    attributes it does not know (`partitionkey`, ...) are ignored on reading; the raw record
    keeps them, so a webhook still forwards them. `traceparent` and `tracestate` are optional,
    and a malformed one must not send an event to the DLQ (`shared.tracing` ignores it)."""

    model_config = TOLERANT

    specversion: Literal["1.0"] = "1.0"
    id: uuid.UUID
    source: str = Field(pattern=r"^/clinicflow/[a-z]+$", examples=["/clinicflow/intake"])
    type: str = Field(min_length=1, description="The topic name, prefix included.")
    subject: str = Field(min_length=1, description="The client_id (site_id for site_updated).")
    time: UtcDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str
    siteid: SiteId
    correlationid: uuid.UUID
    causationid: uuid.UUID | None = None
    traceparent: TraceAttribute = Field(
        default=None,
        description="W3C Trace Context of the span that caused this event (CloudEvents "
        "distributed-tracing extension); absent when tracing is off.",
        examples=["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
    )
    tracestate: TraceAttribute = Field(
        default=None, description="W3C `tracestate` accompanying `traceparent`, when any."
    )
    data: dict[str, Any]


class EventError(ValueError):
    """A record that is not a valid clinicflow event; the message says what is wrong."""


@dataclass(frozen=True)
class Event:
    """A parsed event: the envelope plus its typed data."""

    envelope: CloudEvent
    kind: EventKind
    data: EventData
    raw: bytes = b""

    @property
    def id(self) -> str:
        return str(self.envelope.id)

    @property
    def correlation_id(self) -> str:
        return str(self.envelope.correlationid)

    @property
    def trace(self) -> dict[str, str | None]:
        """The trace context it carries (`shared.tracing`), values None when absent."""
        return {"traceparent": self.envelope.traceparent, "tracestate": self.envelope.tracestate}


@dataclass(frozen=True)
class Record:
    """A Kafka record ready to send: what an outbox stores and the relay publishes."""

    topic: str
    key: str
    value: bytes | None
    headers: dict[str, str]
    event_id: str


def key_of(data: EventData) -> str:
    """Records are keyed by client_id, except sites, keyed by site_id (SPEC section 2)."""
    kind = kind_of(data)
    return str(getattr(data, "site_id" if kind is EventKind.SITE_UPDATED else "client_id"))


def build(
    data: EventData,
    *,
    source: str,
    prefix: str,
    correlation_id: str | uuid.UUID | None = None,
    causation_id: str | uuid.UUID | None = None,
    event_id: uuid.UUID | None = None,
    time: datetime | None = None,
) -> Record:
    """Wrap `data` in its envelope; the first event of a workflow starts a new correlation id.

    The current span's trace context goes into the envelope now, so whoever publishes these
    bytes later continues the trace of the request or handler that built them."""
    kind = kind_of(data)
    trace = tracing.carrier()
    new_id = event_id or uuid.uuid4()
    envelope = CloudEvent(
        id=new_id,
        source=f"/clinicflow/{source}",
        type=prefix + kind.value,
        subject=key_of(data),
        time=time or datetime.now(UTC),
        dataschema=dataschema_for(kind),
        siteid=data.site_id,  # type: ignore[attr-defined]
        correlationid=uuid.UUID(str(correlation_id)) if correlation_id else new_id,
        causationid=uuid.UUID(str(causation_id)) if causation_id else None,
        traceparent=trace.get("traceparent"),
        tracestate=trace.get("tracestate"),
        data=data.model_dump(mode="json"),
    )
    document = envelope.model_dump(mode="json")
    for optional in OPTIONAL_ATTRIBUTES:
        if document[optional] is None:
            del document[optional]
    value = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    return Record(
        topic=envelope.type,
        key=envelope.subject,
        value=value,
        headers={"content-type": CONTENT_TYPE},
        event_id=str(new_id),
    )


def follow(data: EventData, cause: Event, *, source: str, prefix: str) -> Record:
    """An event caused by `cause`: same workflow (correlation id), and `cause` as its cause."""
    return build(
        data,
        source=source,
        prefix=prefix,
        correlation_id=cause.correlation_id,
        causation_id=cause.id,
    )


def tombstone(kind: EventKind, key: str, *, prefix: str) -> Record:
    """A null-valued record that erases `key` from a compacted topic."""
    if kind not in COMPACTED:
        raise ValueError(f"{kind.value} is not compacted; tombstones make no sense there")
    return Record(
        topic=prefix + kind.value, key=key, value=None, headers={}, event_id=str(uuid.uuid4())
    )


def parse(value: bytes, *, prefix: str) -> Event:
    """Decode a record value into a typed event, or raise EventError naming the problem."""
    try:
        document = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"value is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise EventError("value is not a JSON object")
    try:
        envelope = CloudEvent.model_validate(document)
    except ValidationError as exc:
        raise EventError(f"envelope invalid: {_summary(exc)}") from exc
    if not envelope.type.startswith(prefix):
        raise EventError(f"type {envelope.type!r} lacks the topic prefix {prefix!r}")
    try:
        kind = EventKind(envelope.type.removeprefix(prefix))
    except ValueError as exc:
        raise EventError(f"unknown event type {envelope.type!r}") from exc
    try:
        data = EVENT_MODELS[kind].model_validate(envelope.data)
    except ValidationError as exc:
        raise EventError(f"data invalid for {kind.value}: {_summary(exc)}") from exc
    return Event(envelope=envelope, kind=kind, data=data, raw=value)


def data_parser(model: type[DataT], *, prefix: str) -> Callable[[bytes], DataT]:
    """A parser of record values that yields `model` data, for views of one topic."""

    def parse_data(value: bytes) -> DataT:
        data = parse(value, prefix=prefix).data
        if not isinstance(data, model):
            raise EventError(f"expected {model.__name__}, got {type(data).__name__}")
        return data

    return parse_data


def _summary(exc: ValidationError) -> str:
    """Field locations and messages only: input values never reach logs or DLQ headers."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
    )
