"""Intake through HTTP, against the real Kafka broker and the real MongoDB-wire server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet, InvalidToken
from fastapi import FastAPI
from pydantic import SecretStr
from pymongo.asynchronous.database import AsyncDatabase

from services.intake.adapters.crypto import HealthCipher
from services.intake.app import create_app
from services.intake.domain.questionnaire import HealthAnswers
from services.intake.settings import IntakeSettings
from shared.envelope import build
from shared.events import EventKind
from shared.examples import EXAMPLES
from shared.publisher import KafkaPublisher, send_record
from shared.topics import Topics, ensure_topics
from tests.conftest import Servers
from tests.support import read_topic, serving

pytestmark = pytest.mark.integration

HEALTH_FIELDS = list(HealthAnswers.model_fields)


def body(**changes: Any) -> dict[str, Any]:
    """The SPEC's example request, with `changes` merged one level deep."""
    request: dict[str, Any] = {
        "site_id": "paris-01",
        "client": {
            "full_name": "Ana Silva",
            "email": "ana@example.org",
            "phone": "+33600000000",
            "locale": "fr",
        },
        "treatment": {"areas": ["face"], "concerns": ["acne_scars"], "severity": "severe"},
        "skin": {"sensitivity": "normal", "fitzpatrick": 4},
        "health": dict.fromkeys(HEALTH_FIELDS, False),
        "consent": {"treatment": True, "data_processing": True},
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(request.get(key), dict):
            request[key] = {**request[key], **value}
        else:
            request[key] = value
    return request


@dataclass
class Intake:
    http: httpx.AsyncClient
    app: FastAPI
    topics: Topics
    db: AsyncDatabase[dict[str, Any]]
    key: str
    logs: list[str]

    async def records(self, kind: EventKind, expect: int) -> list[Any]:
        return await read_topic(
            str(self.app.state.runtime.settings.kafka_bootstrap_servers),
            self.topics.name(kind),
            expect=expect,
        )

    async def nothing_stored(self) -> bool:
        return (
            await self.db["screenings"].count_documents({}) == 0
            and await self.db["clients"].count_documents({}) == 0
        )


class Capture(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(level=logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + (self.format(record) if record.exc_info else ""))


@pytest.fixture
async def intake(
    servers: Servers, topic_prefix: str, db_name: str, db: AsyncDatabase[dict[str, Any]]
) -> AsyncIterator[Intake]:
    topics = Topics(topic_prefix)
    await ensure_topics(servers.kafka_bootstrap_servers, topics, partitions=2)
    publisher = KafkaPublisher(servers.kafka_bootstrap_servers, "tests")
    await publisher.start()
    await send_record(
        publisher, build(EXAMPLES[EventKind.SITE_UPDATED], source="scheduler", prefix=topic_prefix)
    )
    await publisher.stop()

    key = Fernet.generate_key().decode()
    settings = IntakeSettings(
        kafka_bootstrap_servers=servers.kafka_bootstrap_servers,
        mongodb_uri=servers.mongodb_uri,
        mongodb_database=db_name,
        topic_prefix=topic_prefix,
        environment="test",
        health_key=SecretStr(key),
    )
    app = create_app(settings)
    lines: list[str] = []
    capture = Capture(lines)
    logging.getLogger().addHandler(capture)
    logging.getLogger().setLevel(logging.INFO)
    try:
        async with serving(app) as http:
            yield Intake(http, app, topics, db, key, lines)
    finally:
        logging.getLogger().removeHandler(capture)
        logging.getLogger().setLevel(logging.WARNING)


async def test_a_clean_questionnaire_passes_and_publishes_once(intake: Intake) -> None:
    response = await intake.http.post("/v1/screenings", json=body())
    assert response.status_code == 201
    answer = response.json()
    assert answer["outcome"] == "passed"
    assert answer["reasons"] == []
    assert answer["recheck_after"] is None
    assert answer["policy_version"] == "default-2026.1"

    records = await intake.records(EventKind.SCREENING_PASSED, expect=1)
    assert len(records) == 1
    event = json.loads(records[0].value)
    assert records[0].key == answer["client_id"].encode()
    assert dict(records[0].headers)["content-type"] == b"application/cloudevents+json"
    assert event["type"] == f"{intake.topics.prefix}screening_passed"
    assert event["source"] == "/clinicflow/intake"
    assert event["subject"] == answer["client_id"]
    assert event["siteid"] == "paris-01"
    assert event["correlationid"] == event["id"]
    assert set(event["data"]) == {
        "screening_id", "client_id", "site_id", "areas", "concerns", "severity",
        "skin_sensitivity", "policy_version", "screened_at", "valid_until",
    }  # fmt: skip
    data = event["data"]
    assert data["screening_id"] == answer["screening_id"]
    assert (data["areas"], data["concerns"], data["severity"]) == (
        ["face"],
        ["acne_scars"],
        "severe",
    )
    assert data["skin_sensitivity"] == "normal"
    assert data["valid_until"] == answer["valid_until"].replace("+00:00", "Z")

    contacts = await intake.records(EventKind.CLIENT_CONTACT, expect=1)
    contact = json.loads(contacts[0].value)
    assert contact["data"] == {
        "client_id": answer["client_id"],
        "site_id": "paris-01",
        "full_name": "Ana Silva",
        "email": "ana@example.org",
        "phone": "+33600000000",
        "locale": "fr",
    }
    assert contact["correlationid"] == event["id"]
    assert await intake.records(EventKind.SCREENING_FAILED, expect=0) == []

    again = await intake.http.get(f"/v1/screenings/{answer['screening_id']}")
    assert again.status_code == 200
    assert again.json() == answer


async def test_a_pregnant_client_is_deferred_with_a_french_reason(intake: Intake) -> None:
    response = await intake.http.post("/v1/screenings", json=body(health={"pregnant": True}))
    assert response.status_code == 201
    answer = response.json()
    assert answer["outcome"] == "deferred"
    assert [r["code"] for r in answer["reasons"]] == ["PREGNANCY"]
    assert "grossesse" in answer["reasons"][0]["message"]
    assert answer["recheck_after"] is None
    records = await intake.records(EventKind.SCREENING_FAILED, expect=1)
    data = json.loads(records[0].value)["data"]
    assert (data["outcome"], data["reasons"], data["recheck_after"]) == (
        "deferred",
        ["PREGNANCY"],
        None,
    )
    assert await intake.records(EventKind.SCREENING_PASSED, expect=0) == []


async def test_anticoagulants_are_declined(intake: Intake) -> None:
    response = await intake.http.post(
        "/v1/screenings",
        json=body(health={"anticoagulants": True, "active_acne": True}, client={"locale": "en"}),
    )
    answer = response.json()
    assert answer["outcome"] == "declined"
    assert {r["code"] for r in answer["reasons"]} == {"ANTICOAGULANTS", "ACTIVE_ACNE"}
    assert "blood thinners" in " ".join(r["message"] for r in answer["reasons"])
    records = await intake.records(EventKind.SCREENING_FAILED, expect=1)
    assert json.loads(records[0].value)["data"]["outcome"] == "declined"


async def test_a_retried_post_returns_the_first_answer_and_publishes_nothing(
    intake: Intake,
) -> None:
    headers = {"Idempotency-Key": "front-desk-7f3a"}
    first = await intake.http.post("/v1/screenings", json=body(), headers=headers)
    second = await intake.http.post("/v1/screenings", json=body(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(await intake.records(EventKind.SCREENING_PASSED, expect=2)) == 1
    assert len(await intake.records(EventKind.CLIENT_CONTACT, expect=2)) == 1
    assert await intake.db["screenings"].count_documents({}) == 1

    other = await intake.http.post(
        "/v1/screenings", json=body(health={"eczema": True}), headers=headers
    )
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["reason"] == "idempotency_key_reused"
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"


@pytest.mark.parametrize(
    ("content", "status", "field"),
    [
        (b'{"site_id": "paris-01", ', 422, "body"),
        (json.dumps(body(consent={"treatment": False})).encode(), 422, "consent.treatment"),
        (
            json.dumps(body(consent={"data_processing": False})).encode(),
            422,
            "consent.data_processing",
        ),
        (json.dumps({k: v for k, v in body().items() if k != "consent"}).encode(), 422, "consent"),
        (json.dumps(body(site_id="lyon-99")).encode(), 422, "site_id"),
        (json.dumps(body(treatment={"areas": ["elbow"]})).encode(), 422, "treatment.areas.0"),
        (json.dumps(body(skin={"sensitivity": "leathery"})).encode(), 422, "skin.sensitivity"),
        (
            json.dumps({**body(), "health": {"pregnant": False}}).encode(),
            422,
            "health.active_acne",
        ),
        (json.dumps(body(health={"eczema": "no"})).encode(), 422, "health.eczema"),
        (json.dumps(body(client={"email": None, "phone": None})).encode(), 422, "client"),
        (json.dumps({**body(), "padding": "x" * 100 * 1024}).encode(), 413, "body"),
    ],
    ids=[
        "malformed-json", "no-treatment-consent", "no-data-consent", "consent-missing",
        "unknown-site", "wrong-area", "wrong-sensitivity", "missing-health-answers",
        "health-not-boolean", "unreachable-client", "100KiB-body",
    ],
)  # fmt: skip
async def test_bad_input_gets_a_named_4xx_and_writes_nothing(
    intake: Intake, content: bytes, status: int, field: str
) -> None:
    response = await intake.http.post(
        "/v1/screenings", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    answer = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in answer["errors"]], answer
    assert await intake.nothing_stored()
    await asyncio.sleep(0.5)
    for kind in (EventKind.SCREENING_PASSED, EventKind.SCREENING_FAILED, EventKind.CLIENT_CONTACT):
        assert (
            await read_topic(
                str(intake.app.state.runtime.settings.kafka_bootstrap_servers),
                intake.topics.name(kind),
                expect=0,
                settle=0.2,
            )
            == []
        )


async def test_errors_never_echo_health_answers(intake: Intake) -> None:
    response = await intake.http.post(
        "/v1/screenings", json=body(health={"pregnant": "very much", "eczema": True})
    )
    assert response.status_code == 422
    assert "very much" not in response.text
    assert "input" not in response.json()["errors"][0]


async def test_no_event_or_log_line_carries_a_health_answer(intake: Intake) -> None:
    for health in ({}, {"pregnant": True}, {"rosacea": True, "herpes_outbreak": True}):
        response = await intake.http.post("/v1/screenings", json=body(health=health))
        assert response.status_code == 201
    await intake.http.post("/v1/screenings", json=body(health={"eczema": "yes"}))
    passed = await intake.records(EventKind.SCREENING_PASSED, expect=1)
    failed = await intake.records(EventKind.SCREENING_FAILED, expect=2)
    contacts = await intake.records(EventKind.CLIENT_CONTACT, expect=3)
    assert len(passed) + len(failed) == 3
    for record in [*passed, *failed, *contacts]:
        text = record.value.decode()
        for field in HEALTH_FIELDS:
            assert field not in text, f"{field} leaked into {text}"
    assert intake.logs, "the capture must see the service's log lines"
    for line in intake.logs:
        for field in HEALTH_FIELDS:
            assert field not in line, f"{field} leaked into a log line: {line}"


async def test_stored_health_answers_need_the_key(intake: Intake) -> None:
    response = await intake.http.post("/v1/screenings", json=body(health={"herpes_outbreak": True}))
    stored = await intake.db["screenings"].find_one({"_id": response.json()["screening_id"]})
    assert stored is not None
    raw = json.dumps(stored, default=str)
    for field in HEALTH_FIELDS:
        assert field not in raw
    state = json.dumps({k: v for k, v in stored.items() if k != "outbox"}, default=str)
    assert "HERPES_OUTBREAK" not in state, "reason codes are health data: stored encrypted"
    with pytest.raises(InvalidToken):
        HealthCipher([Fernet.generate_key().decode()]).decrypt(stored["health"])
    answers = HealthCipher([intake.key]).decrypt(stored["health"])
    assert answers.herpes_outbreak is True
    assert answers.pregnant is False


async def test_erasure_removes_personal_data_and_publishes_a_tombstone(intake: Intake) -> None:
    created = (await intake.http.post("/v1/screenings", json=body())).json()
    client_id = created["client_id"]
    response = await intake.http.delete(f"/v1/clients/{client_id}")
    assert response.status_code == 204

    client = await intake.db["clients"].find_one({"_id": client_id})
    assert client is not None
    assert "contact" not in client
    screening = await intake.db["screenings"].find_one({"_id": created["screening_id"]})
    assert screening is not None
    dropped = {"health", "treatment", "skin", "locale", "reasons", "recheck_after"}
    assert not (dropped | {"idempotency_key", "request_fingerprint"}) & set(screening)
    assert screening["outcome"] == "passed"

    contacts = await intake.records(EventKind.CLIENT_CONTACT, expect=2)
    assert [(r.key, r.value is None) for r in contacts] == [
        (client_id.encode(), False),
        (client_id.encode(), True),
    ]
    gone = await intake.http.get(f"/v1/screenings/{created['screening_id']}")
    assert gone.status_code == 404, "an erased client's screening must not be readable"
    assert (await intake.http.delete("/v1/clients/c-nobody")).status_code == 404


async def test_readiness_waits_for_the_sites(intake: Intake) -> None:
    ready = await intake.http.get("/readyz")
    assert ready.json()["checks"]["sites"] is True
    assert (
        await intake.http.get("/v1/screenings/00000000-0000-0000-0000-000000000000")
    ).status_code == 404
    openapi = (await intake.http.get("/openapi.json")).json()
    assert "/v1/screenings" in openapi["paths"]
