"""JSON Schemas and the AsyncAPI document for integrators, generated from the event models.

`python -m shared.schemas` writes `docs/schemas/<kind>.v1.json` (one per event, envelope and
data), `docs/asyncapi.json` and the example records of `docs/integrators.md`;
`--check` fails when the committed files differ from the models.
The AsyncAPI document is FastStream's, from a broker that declares one publisher per topic,
completed with what FastStream cannot say (keys, headers, topic configuration, DLQs); the
suite checks it with the official `@asyncapi/parser` (`tests/node/validate-asyncapi.mjs`).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from pydantic import TypeAdapter, create_model

from shared.deadletter import DLQ_HEADERS
from shared.envelope import CONTENT_TYPE, SCHEMA_VERSION, CloudEvent, build, dataschema_for
from shared.events import COMPACTED, EVENT_MODELS, PRODUCERS, EventKind
from shared.examples import EXAMPLES
from shared.settings import ServiceSettings
from shared.topics import Topics
from shared.vocabulary import ClientId, SiteId

DOCS = Path(__file__).resolve().parent.parent / "docs"
TOPICS = Topics()


def event_model(kind: EventKind) -> type[CloudEvent]:
    """The envelope with `data` typed as the event's own model."""
    data_model = EVENT_MODELS[kind]
    name = "".join(part.title() for part in kind.value.split("_")) + "Event"
    model: type[CloudEvent] = create_model(
        name, __base__=CloudEvent, __doc__=data_model.__doc__, data=(data_model, ...)
    )
    return model


def json_schema(kind: EventKind) -> dict[str, Any]:
    schema = event_model(kind).model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": dataschema_for(kind),
        **schema,
    }


def asyncapi() -> dict[str, Any]:
    return asyncapi_for(TOPICS.prefix)


KAFKA_BINDING = "0.5.0"
CORRELATION = "#/components/correlationIds/Workflow"
PARTITIONS: int = ServiceSettings.model_fields["topic_partitions"].default
REPLICAS: int = ServiceSettings.model_fields["topic_replication_factor"].default
DLQ_HEADER_MEANINGS = {
    "dlq-error": "What failed: the parse error or the handler's exception message.",
    "dlq-error-type": "The exception's class name.",
    "dlq-original-topic": "The topic the record was consumed from.",
    "dlq-original-partition": "Its partition there (decimal).",
    "dlq-original-offset": "Its offset there (decimal).",
    "dlq-consumer-group": "The consumer group that gave up on it (`<prefix><service>-view` for a "
    "compacted view).",
    "dlq-attempts": "Attempts made (decimal; 0 when it was refused before any handler ran).",
    "dlq-failed-at": "When it was dead-lettered (ISO 8601, UTC).",
}
"""The meaning of each of `DLQ_HEADERS`: a header added there without one here fails generation."""
KEY_FIELDS = {
    kind: "site_id" if kind is EventKind.SITE_UPDATED else "client_id" for kind in EventKind
}
"""The `data` field each topic's records are keyed by (`shared.envelope.key_of`)."""
KEY_SCHEMAS = {"client_id": "ClientId", "site_id": "SiteId"}


@functools.cache
def asyncapi_for(
    prefix: str, partitions: int = PARTITIONS, replicas: int = REPLICAS
) -> dict[str, Any]:
    """The AsyncAPI document for a deployment's topic prefix (served at `/asyncapi.json`).

    FastStream generates the channels, send operations and payload schemas; what it cannot say
    is added here: the CloudEvents content type, where the correlation id is, each record's key
    and headers, the topic configuration `shared.topics.ensure_topics` creates (with the
    deployment's partitions and replicas), tombstones on compacted topics and the DLQ channels.
    """
    topics = Topics(prefix)
    broker = KafkaBroker("kafka:9092")
    for kind in EventKind:
        broker.publisher(
            topics.name(kind),
            title=topics.name(kind),
            description=_channel_description(topics, kind),
            schema=event_model(kind),
        )
    spec = AsyncAPI(
        broker,
        title="clinicflow events",
        version=SCHEMA_VERSION,
        description="Topics that intake, scheduler and notifier publish; see docs/integrators.md.",
    )
    document: dict[str, Any] = json.loads(spec.to_specification().to_json())
    document["defaultContentType"] = CONTENT_TYPE
    components = document["components"]
    components["schemas"] |= _record_schemas()
    components["correlationIds"] = {
        "Workflow": {
            "description": "One id for a client's whole workflow, from screening to the last "
            "aftercare step: the CloudEvent extension attribute `correlationid`.",
            "location": "$message.payload#/correlationid",
        }
    }
    messages: dict[str, Any] = {}
    for kind in EventKind:
        topic, dlq = topics.name(kind), topics.dlq(kind)
        channel, operation = document["channels"][topic], document["operations"][topic]
        channel["bindings"] = _topic_binding(kind in COMPACTED, partitions, replicas)
        payload = f"#/components/schemas/{event_model(kind).__name__}"
        messages[f"{topic}:Message"] = _event_message(kind, topic, payload)
        if kind in COMPACTED:
            messages[f"{topic}:Tombstone"] = _tombstone_message(kind, topic)
            channel["messages"]["Tombstone"] = {"$ref": f"#/components/messages/{topic}:Tombstone"}
            operation["messages"].append({"$ref": f"#/channels/{topic}/messages/Tombstone"})
        messages[f"{dlq}:DeadLetter"] = _dead_letter_message(kind, topic, payload)
        document["channels"][dlq] = {
            "address": dlq,
            "description": f"Records of {topic} that a consumer could not process, copied with "
            "the error and their origin in `dlq-*` headers (SPEC section 2: nothing is dropped "
            "silently). Not compacted, whatever the original topic is.",
            "servers": channel["servers"],
            "bindings": _topic_binding(False, partitions, replicas),
            "messages": {"DeadLetter": {"$ref": f"#/components/messages/{dlq}:DeadLetter"}},
        }
        document["operations"][dlq] = {
            "action": "send",
            "summary": f"Every consumer of {topic} dead-letters here.",
            "channel": {"$ref": f"#/channels/{dlq}"},
            "messages": [{"$ref": f"#/channels/{dlq}/messages/DeadLetter"}],
        }
    components["messages"] = messages
    return document


def _channel_description(topics: Topics, kind: EventKind) -> str:
    compacted = (
        f" Compacted, keyed by {KEY_FIELDS[kind]}: the last record of each key is kept, and a "
        "tombstone (a null value, no headers) erases the key."
        if kind in COMPACTED
        else f" Keyed by {KEY_FIELDS[kind]}, so one client's events stay in order; records "
        "expire after the broker's retention."
    )
    return (
        f"Published by {PRODUCERS[kind]} as a CloudEvents 1.0 structured-mode record "
        f"(header content-type: {CONTENT_TYPE}).{compacted} "
        f"Records a consumer cannot process land in {topics.dlq(kind)}."
    )


def _topic_binding(compacted: bool, partitions: int, replicas: int) -> dict[str, Any]:
    """What `ensure_topics` creates; `delete` is Kafka's default, which it leaves as it is."""
    return {
        "kafka": {
            "partitions": partitions,
            "replicas": replicas,
            "topicConfiguration": {"cleanup.policy": ["compact" if compacted else "delete"]},
            "bindingVersion": KAFKA_BINDING,
        }
    }


def _key_binding(kind: EventKind, *, dead_letter: bool = False) -> dict[str, Any]:
    key: dict[str, Any] = {"$ref": f"#/components/schemas/{KEY_SCHEMAS[KEY_FIELDS[kind]]}"}
    if dead_letter:  # the key is copied as it was, and a view dead-letters records without one
        key = {
            "description": "The original record's key, null when it had none.",
            "anyOf": [key, {"type": "null"}],
        }
    return {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING}}


def _event_message(kind: EventKind, topic: str, payload: str) -> dict[str, Any]:
    return {
        "name": f"{topic}:Message",
        "title": f"{topic} event",
        "summary": f"A CloudEvent of type {topic}, keyed by its {KEY_FIELDS[kind]}.",
        "contentType": CONTENT_TYPE,
        "correlationId": {"$ref": CORRELATION},
        "headers": {"$ref": "#/components/schemas/EventHeaders"},
        "payload": {"$ref": payload},
        "bindings": _key_binding(kind),
    }


def _tombstone_message(kind: EventKind, topic: str) -> dict[str, Any]:
    return {
        "name": f"{topic}:Tombstone",
        "title": "Tombstone",
        "summary": f"Erases a {KEY_FIELDS[kind]} from the compacted topic: delete your copy too.",
        "headers": {"type": "object", "description": "None: a tombstone carries no headers."},
        "payload": {"type": "null", "description": "A null record value."},
        "bindings": _key_binding(kind),
    }


def _dead_letter_message(kind: EventKind, topic: str, payload: str) -> dict[str, Any]:
    values = [
        {"$ref": payload},
        {"$ref": "#/components/schemas/DeadLetterStandIn"},
        *(
            [{"type": "null", "description": "A tombstone without a key."}]
            if kind in COMPACTED
            else []
        ),
        {"description": "Anything else: bytes that were not JSON or not a valid event."},
    ]
    return {
        "name": f"{topic}.dlq:DeadLetter",
        "title": f"Dead letter of {topic}",
        "summary": f"A record of {topic} with its key, value and headers as published, plus the "
        "dlq-* headers.",
        "contentType": CONTENT_TYPE,
        "correlationId": {"$ref": CORRELATION},
        "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
        "payload": {
            "description": "The value exactly as it was on the topic, or a stand-in when Kafka "
            "refused the copy (header dlq-value-omitted).",
            "anyOf": values,
        },
        "bindings": _key_binding(kind, dead_letter=True),
    }


def _record_schemas() -> dict[str, Any]:
    """The key, header and stand-in schemas the messages refer to."""
    content_type = {
        "type": "string",
        "const": CONTENT_TYPE,
        "description": "CloudEvents structured mode: the whole event, envelope and data, is "
        "the record value.",
    }
    decimal = {"type": "string", "pattern": "^[0-9]+$"}
    where = {"type": "string", "pattern": "^.+:[0-9]+:[0-9]+$"}
    dlq_headers: dict[str, Any] = {
        name: {"type": "string", "description": DLQ_HEADER_MEANINGS[name]} for name in DLQ_HEADERS
    }
    for name in ("dlq-original-partition", "dlq-original-offset", "dlq-attempts"):
        dlq_headers[name] |= decimal
    dlq_headers["dlq-failed-at"]["format"] = "date-time"
    return {
        "ClientId": TypeAdapter(ClientId).json_schema() | {"title": "ClientId"},
        "SiteId": TypeAdapter(SiteId).json_schema() | {"title": "SiteId"},
        "EventHeaders": {
            "title": "EventHeaders",
            "type": "object",
            "description": "Kafka record headers (values are UTF-8). Others may be added: "
            "ignore the ones you do not know.",
            "properties": {"content-type": content_type},
            "required": ["content-type"],
        },
        "DeadLetterHeaders": {
            "title": "DeadLetterHeaders",
            "type": "object",
            "description": "The original record's headers, as they were, and the dlq-* headers "
            "of the dead-lettering.",
            "properties": {
                "content-type": {
                    "type": "string",
                    "description": f"The original record's ({CONTENT_TYPE} for an event).",
                },
                **dlq_headers,
                "dlq-value-omitted": {
                    "type": "string",
                    "const": "true",
                    "description": "Present when Kafka refused the copy (too large with the "
                    "dlq-* headers): the value is a DeadLetterStandIn.",
                },
                "dlq-value-stored-as": where
                | {
                    "description": "With dlq-value-omitted: where the original bytes are kept "
                    "(`dead_letter_values` of the consuming service), topic:partition:offset."
                },
            },
            "required": list(DLQ_HEADERS),
        },
        "DeadLetterStandIn": {
            "title": "DeadLetterStandIn",
            "type": "object",
            "description": "Sent instead of a value Kafka would not take back with the dlq-* "
            "headers.",
            "properties": {
                "omitted": {"type": "boolean", "const": True},
                "size": {"type": "integer", "minimum": 0, "description": "The value's bytes."},
                "stored_as": where | {"description": "topic:partition:offset."},
            },
            "required": ["omitted", "size", "stored_as"],
        },
    }


EXAMPLES_START = "<!-- examples:start -->"
EXAMPLES_END = "<!-- examples:end -->"


def examples_markdown() -> str:
    """One full record per event, with fixed ids and times so the page is reproducible."""
    blocks = []
    for number, kind in enumerate(EventKind, start=1):
        record = build(
            EXAMPLES[kind],
            source=PRODUCERS[kind],
            prefix=TOPICS.prefix,
            event_id=uuid.UUID(int=number),
            correlation_id=uuid.UUID(int=1000 + number),
            causation_id=None
            if kind is EventKind.SCREENING_PASSED
            else uuid.UUID(int=2000 + number),
            time=datetime(2026, 3, 4, 10, 0, tzinfo=UTC),
        )
        document = json.loads(record.value or b"")
        pretty = json.dumps(document, indent=2, ensure_ascii=False)
        blocks.append(
            f"### `{record.topic}`\n\nKey `{record.key}`, published by {PRODUCERS[kind]}.\n\n"
            f"```json\n{pretty}\n```\n"
        )
    return "\n".join(blocks)


def integrators_page() -> str:
    page = (DOCS / "integrators.md").read_text()
    head, _, rest = page.partition(EXAMPLES_START)
    _, _, tail = rest.partition(EXAMPLES_END)
    return f"{head}{EXAMPLES_START}\n{examples_markdown()}{EXAMPLES_END}{tail}"


def rendered() -> dict[Path, str]:
    files = {
        DOCS / "schemas" / f"{kind.value}.{SCHEMA_VERSION}.json": json_schema(kind)
        for kind in EventKind
    }
    files[DOCS / "asyncapi.json"] = asyncapi()
    texts = {path: json.dumps(doc, indent=2, sort_keys=True) + "\n" for path, doc in files.items()}
    texts[DOCS / "integrators.md"] = integrators_page()
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.schemas", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        names = ", ".join(str(p.relative_to(DOCS.parent)) for p in stale)
        print(f"stale: {names}; run `python -m shared.schemas`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
