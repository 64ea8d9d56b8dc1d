"""The CloudEvents envelope: what integrators read off every record."""

from __future__ import annotations

import json
import uuid

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka_event

from shared.envelope import (
    CONTENT_TYPE,
    EventError,
    build,
    dataschema_for,
    parse,
    tombstone,
)
from shared.events import EventKind
from shared.examples import CLIENT_ID, EXAMPLES, SITE_ID

PREFIX = "clinic."


@pytest.mark.parametrize("kind", list(EventKind))
def test_build_then_parse_gives_back_the_same_event(kind: EventKind) -> None:
    record = build(EXAMPLES[kind], source="intake", prefix=PREFIX)
    assert record.value is not None
    event = parse(record.value, prefix=PREFIX)
    assert event.kind is kind
    assert event.data == EXAMPLES[kind]
    assert event.id == record.event_id
    assert record.topic == f"clinic.{kind.value}"
    assert record.headers == {"content-type": CONTENT_TYPE}


def test_envelope_attributes_follow_the_spec() -> None:
    cause = uuid.uuid4()
    correlation = uuid.uuid4()
    record = build(
        EXAMPLES[EventKind.SCREENING_PASSED],
        source="intake",
        prefix=PREFIX,
        correlation_id=correlation,
        causation_id=cause,
    )
    assert record.value is not None
    document = json.loads(record.value)
    assert document["specversion"] == "1.0"
    assert document["source"] == "/clinicflow/intake"
    assert document["type"] == "clinic.screening_passed"
    assert document["subject"] == CLIENT_ID
    assert document["datacontenttype"] == "application/json"
    assert document["dataschema"] == dataschema_for(EventKind.SCREENING_PASSED)
    assert document["siteid"] == SITE_ID
    assert document["correlationid"] == str(correlation)
    assert document["causationid"] == str(cause)
    assert document["time"].endswith("Z")
    assert uuid.UUID(document["id"]) == uuid.UUID(record.event_id)
    assert record.key == CLIENT_ID


def test_first_event_of_a_workflow_starts_its_correlation_and_has_no_cause() -> None:
    record = build(EXAMPLES[EventKind.SCREENING_PASSED], source="intake", prefix=PREFIX)
    assert record.value is not None
    document = json.loads(record.value)
    assert document["correlationid"] == document["id"]
    assert "causationid" not in document


def test_sites_are_keyed_by_site_id() -> None:
    record = build(EXAMPLES[EventKind.SITE_UPDATED], source="scheduler", prefix=PREFIX)
    assert record.key == SITE_ID
    assert json.loads(record.value or b"")["subject"] == SITE_ID


def test_null_fields_are_kept_as_null() -> None:
    failed = EXAMPLES[EventKind.SCREENING_FAILED].model_copy(update={"recheck_after": None})
    record = build(failed, source="intake", prefix=PREFIX)
    assert json.loads(record.value or b"")["data"]["recheck_after"] is None


def test_the_prefix_is_part_of_type_and_topic() -> None:
    record = build(EXAMPLES[EventKind.AFTERCARE_DUE], source="notifier", prefix="acme.")
    assert record.topic == "acme.aftercare_due"
    assert parse(record.value or b"", prefix="acme.").kind is EventKind.AFTERCARE_DUE
    with pytest.raises(EventError, match="lacks the topic prefix"):
        parse(record.value or b"", prefix=PREFIX)


def test_cloudevents_sdk_reads_our_records() -> None:
    record = build(EXAMPLES[EventKind.SESSION_COMPLETED], source="scheduler", prefix=PREFIX)
    message = KafkaMessage(
        headers={k: v.encode() for k, v in record.headers.items()},
        key=record.key.encode(),
        value=record.value or b"",
    )
    event = from_kafka_event(message)
    attributes = event.get_attributes()
    assert attributes["type"] == "clinic.session_completed"
    assert attributes["id"] == record.event_id
    assert attributes["siteid"] == SITE_ID
    assert attributes["partitionkey"] == CLIENT_ID
    data = event.get_data()
    assert isinstance(data, dict)
    assert data["timezone"] == "Europe/Paris"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"{not json", "value is not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"specversion": "1.0"}', "envelope invalid"),
    ],
)
def test_unparseable_records_are_named_errors(value: bytes, message: str) -> None:
    with pytest.raises(EventError, match=message):
        parse(value, prefix=PREFIX)


def test_unknown_type_is_refused() -> None:
    record = build(EXAMPLES[EventKind.SCREENING_PASSED], source="intake", prefix=PREFIX)
    document = json.loads(record.value or b"")
    document["type"] = "clinic.teleportation_booked"
    with pytest.raises(EventError, match="unknown event type"):
        parse(json.dumps(document).encode(), prefix=PREFIX)


def test_data_errors_name_the_field_but_never_echo_its_value() -> None:
    record = build(EXAMPLES[EventKind.CLIENT_CONTACT], source="intake", prefix=PREFIX)
    document = json.loads(record.value or b"")
    document["data"]["email"] = "secret-value-not-an-email"
    with pytest.raises(EventError) as caught:
        parse(json.dumps(document).encode(), prefix=PREFIX)
    assert "email" in str(caught.value)
    assert "secret-value" not in str(caught.value)


def test_tombstones_only_on_compacted_topics() -> None:
    record = tombstone(EventKind.CLIENT_CONTACT, CLIENT_ID, prefix=PREFIX)
    assert (record.topic, record.key, record.value) == ("clinic.client_contact", CLIENT_ID, None)
    with pytest.raises(ValueError, match="not compacted"):
        tombstone(EventKind.SCREENING_PASSED, CLIENT_ID, prefix=PREFIX)
