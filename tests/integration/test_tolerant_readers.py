"""Tolerant readers (SPEC section 8): a record with an envelope extension and a `data` field no
clinicflow service knows yet, as a newer producer or a tracing proxy would send it, is processed
by every consumer as if the additions were absent. Real processes, real Kafka and FerretDB."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared.envelope import Record, build, parse
from shared.events import ClientContact, EventKind, ScreeningPassed, SessionCompleted, SiteUpdated
from shared.examples import EXAMPLES
from shared.publisher import KafkaPublisher, send_record
from shared.topics import Topics
from shared.vocabulary import Locale
from tests.conftest import Servers
from tests.procs import Stack, stack
from tests.support import eventually, passing_screening, read_topic, waited_for

pytestmark = pytest.mark.integration
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def with_additions(record: Record) -> Record:
    """The same event with what a newer clinicflow or the CloudEvents SDK may add."""
    assert record.value is not None
    document = json.loads(record.value)
    document |= {"traceparent": TRACEPARENT, "partitionkey": record.key}
    document["data"] |= {"loyalty_tier": "gold", "referral": {"channel": "instagram"}}
    value = json.dumps(document).encode()
    return Record(record.topic, record.key, value, record.headers, record.event_id)


def test_additions_are_read_as_if_absent() -> None:
    record = build(EXAMPLES[EventKind.SESSION_COMPLETED], source="tests", prefix="clinic.")
    added = with_additions(record)
    assert added.value is not None
    event = parse(added.value, prefix="clinic.")
    assert event.data == EXAMPLES[EventKind.SESSION_COMPLETED]
    assert event.id == record.event_id
    assert b"traceparent" in event.raw, "what is forwarded (webhooks) keeps the additions"


@pytest.fixture(scope="module")
def tolerant_stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("tolerant")
    prefix, db = f"tr{uuid.uuid4().hex[:8]}.", f"tolerant_{uuid.uuid4().hex[:8]}"
    with stack(servers, prefix, db, logs) as current:
        yield current


async def test_every_consumer_processes_an_event_with_additions(
    tolerant_stack: Stack, servers: Servers, publisher: KafkaPublisher
) -> None:
    current = tolerant_stack
    prefix = current.env["CLINICFLOW_TOPIC_PREFIX"]
    topics = Topics(prefix)
    now = datetime.now(UTC).replace(microsecond=0)
    client_id = f"c-{uuid.uuid4().hex[:10]}"

    async def send(data: Any, source: str) -> Record:
        record = with_additions(build(data, source=source, prefix=prefix))
        await send_record(publisher, record)
        return record

    site = EXAMPLES[EventKind.SITE_UPDATED]
    contact = EXAMPLES[EventKind.CLIENT_CONTACT]
    passed = EXAMPLES[EventKind.SCREENING_PASSED]
    completed = EXAMPLES[EventKind.SESSION_COMPLETED]
    assert isinstance(site, SiteUpdated)
    assert isinstance(contact, ClientContact)
    assert isinstance(passed, ScreeningPassed)
    assert isinstance(completed, SessionCompleted)
    # Intake's and the notifier's views of the sites (compacted topic).
    await send(site.model_copy(update={"site_id": "tolerant-01"}), "scheduler")
    # The notifier's view of contacts (compacted topic): a French-speaking client.
    await send(
        contact.model_copy(
            update={"client_id": client_id, "site_id": "paris-01", "locale": Locale.FR}
        ),
        "intake",
    )
    # The scheduler's subscription: a passed screening becomes a plan.
    await send(
        passed.model_copy(
            update={"client_id": client_id, "site_id": "paris-01", "screening_id": uuid.uuid4(),
                    "screened_at": now, "valid_until": now + timedelta(days=90)}
        ),
        "intake",
    )  # fmt: skip
    # The notifier's subscription: a completed session becomes an aftercare timeline.
    session = await send(
        completed.model_copy(
            update={"client_id": client_id, "site_id": "paris-01", "session_id": uuid.uuid4(),
                    "completed_at": now - timedelta(minutes=5), "next_session_earliest": None,
                    "sequence": completed.total_sessions}
        ),
        "scheduler",
    )  # fmt: skip

    async with httpx.AsyncClient(auth=current.auth, timeout=10) as http:

        async def planned() -> bool:
            url = f"{current.url('scheduler')}/v1/clients/{client_id}/plan"
            return (await http.get(url)).status_code == 200

        await eventually(planned, within=60)

        async def timeline() -> list[dict[str, Any]] | None:
            url = f"{current.url('notifier')}/v1/clients/{client_id}/aftercare"
            steps: list[dict[str, Any]] = (await http.get(url)).json()
            return steps if any(s["step"] == "immediate" for s in steps) else None

        steps = await waited_for(timeline, within=60)

        async def screened_at_the_new_site() -> bool:
            answer = await http.post(
                f"{current.url('intake')}/v1/screenings", json=passing_screening("tolerant-01")
            )
            return answer.status_code == 201

        await eventually(screened_at_the_new_site, within=30)

    immediate = next(s for s in steps if s["step"] == "immediate")
    assert immediate["session_id"] == str(json.loads(session.value or b"{}")["data"]["session_id"])
    due = await read_topic(
        servers.kafka_bootstrap_servers, topics.name(EventKind.AFTERCARE_DUE), expect=1
    )
    mine = [json.loads(r.value) for r in due if json.loads(r.value)["subject"] == client_id]
    assert mine, "the immediate step fell due"
    assert mine[0]["data"]["locale"] == "fr", "the contact (with additions) was read"
    assert "loyalty_tier" not in mine[0]["data"], "additions are not republished as ours"
    for kind in (EventKind.SCREENING_PASSED, EventKind.SESSION_COMPLETED):
        dead = await read_topic(
            servers.kafka_bootstrap_servers, topics.dlq(kind), expect=0, within=2, settle=1
        )
        ours = [r for r in dead if r.key == client_id.encode()]
        assert ours == [], [dict(r.headers) for r in ours]
