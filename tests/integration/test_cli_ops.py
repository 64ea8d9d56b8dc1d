"""`clinicflow status|trace|stalled|dlq` as an operator runs them, against the three services as
real processes on real Kafka and FerretDB, and the `/v1/ops` routes they read."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from scripts.infra import free_port
from shared.access import Role
from shared.envelope import build
from shared.events import EventKind, ScreeningPassed
from shared.examples import EXAMPLES
from shared.publisher import KafkaPublisher, send_record
from shared.topics import Topics
from tests.access import bearer, issue_key
from tests.conftest import Servers
from tests.procs import Stack, stack
from tests.support import eventually, passing_screening, read_topic, waited_for

pytestmark = pytest.mark.integration
CLI = Path(sys.executable).with_name("clinicflow")
PHONE = "+33611223344"
FREE_TEXT = "Ana called: her daughter is ill"


@pytest.fixture(scope="module")
def ops_stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("cli-ops")
    prefix, db = f"op{uuid.uuid4().hex[:8]}.", f"ops_{uuid.uuid4().hex[:8]}"
    with stack(servers, prefix, db, logs) as current:
        yield current


def prefix_of(current: Stack) -> str:
    return current.env["CLINICFLOW_TOPIC_PREFIX"]


async def clinicflow(current: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI with the stack's Kafka, prefix, service URLs and ops key, as operators set them."""
    full_env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": current.env["KAFKA_BOOTSTRAP_SERVERS"],
        "CLINICFLOW_TOPIC_PREFIX": prefix_of(current),
        "CLINICFLOW_INTAKE_URL": current.url("intake"),
        "CLINICFLOW_SCHEDULER_URL": current.url("scheduler"),
        "CLINICFLOW_NOTIFIER_URL": current.url("notifier"),
        "CLINICFLOW_API_KEY": current.auth.tokens[Role.OPS],
        "COLUMNS": "250",
        **env,
    }
    return await asyncio.to_thread(
        subprocess.run, [str(CLI), *args], env=full_env, capture_output=True, text=True, timeout=120
    )


async def as_json(current: Stack, *args: str, **env: str) -> Any:
    done = await clinicflow(current, *args, "--json", **env)
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


async def same_id_records(bootstrap: str, topic: str, event_id: str) -> list[Any]:
    """Every record of `topic` whose CloudEvent id is `event_id` (the topic holds one at least)."""
    records = await read_topic(bootstrap, topic, expect=1, settle=2.0)
    return [r for r in records if json.loads(r.value)["id"] == event_id]


async def test_ops_routes_answer_the_ops_role_only(ops_stack: Stack, servers: Servers) -> None:
    current = ops_stack
    others = {
        role: await issue_key(servers.kafka_bootstrap_servers, prefix_of(current), role)
        for role in (Role.FRONT_DESK, Role.CLINIC_ADMIN, Role.INTEGRATOR)
    }
    routes = [(name, "/v1/ops/status") for name in ("intake", "scheduler", "notifier")]
    routes.append(("scheduler", "/v1/ops/stalled"))
    async with httpx.AsyncClient(timeout=10) as http:
        for service, path in routes:
            url = current.url(service) + path
            assert (await http.get(url)).status_code == 401
            for token in others.values():

                async def refused(url: str = url, token: str = token) -> bool:
                    return (await http.get(url, headers=bearer(token))).status_code == 403

                await eventually(refused, within=10)
            ops = await http.get(url, headers=bearer(current.auth.tokens[Role.OPS]))
            assert ops.status_code == 200, (service, path, ops.text)
        notifier = await http.get(
            current.url("notifier") + "/v1/ops/status",
            headers=bearer(current.auth.tokens[Role.OPS]),
        )
        assert set(notifier.json()["outbox"]) == {"queued", "expired_leases", "dead_letters"}
        assert notifier.json()["due_unsent"] == 0
        document = (await http.get(current.url("scheduler") + "/openapi.json")).json()
        declared = document["paths"]["/v1/ops/stalled"]["get"]["responses"]
        assert {"401", "403", "429"} <= set(declared)


async def test_trace_follows_a_workflow_in_causal_order_and_stalled_finds_its_plan(
    ops_stack: Stack,
) -> None:
    current = ops_stack
    client_id = f"c-{uuid.uuid4().hex[:10]}"
    deferred = passing_screening(client_id=client_id, phone=PHONE)
    deferred["health"] = {**deferred["health"], "pregnant": True}
    async with httpx.AsyncClient(auth=current.auth, timeout=10) as http:
        first = await http.post(f"{current.url('intake')}/v1/screenings", json=deferred)
        assert first.json()["outcome"] == "deferred", first.text
        passed = await http.post(
            f"{current.url('intake')}/v1/screenings",
            json=passing_screening(client_id=client_id, phone=PHONE),
        )
        assert passed.json()["outcome"] == "passed", passed.text

        async def plan() -> dict[str, Any] | None:
            answer = await http.get(f"{current.url('scheduler')}/v1/clients/{client_id}/plan")
            return answer.json() if answer.status_code == 200 else None

        booked = await waited_for(plan, within=60)
        session = booked["sessions"][0]["session_id"]
        done = await http.post(
            f"{current.url('scheduler')}/v1/sessions/{session}/complete",
            json={"needle_depth_mm": 1.5, "areas": ["face"], "anesthetic_used": True,
                  "bleeding": False, "practitioner_id": "pr-ops"},
        )  # fmt: skip
        assert done.status_code == 200, done.text
        second = done.json()["next_session"]["session_id"]
        cancelled = await http.post(
            f"{current.url('scheduler')}/v1/sessions/{second}/cancel", json={"reason": FREE_TEXT}
        )
        assert cancelled.status_code == 200, cancelled.text

        async def aftercare_text() -> list[str] | None:
            url = f"{current.url('notifier')}/v1/clients/{client_id}/aftercare"
            steps = (await http.get(url)).json()
            due = [s for s in steps if s["step"] == "immediate" and s["status"] != "scheduled"]
            return [due[0]["title"], *due[0]["instructions"]] if due else None

        texts = await waited_for(aftercare_text, within=60)

    async def whole() -> list[dict[str, Any]] | None:
        events: list[dict[str, Any]] = await as_json(current, "trace", client_id)
        kinds = [e["topic"].removeprefix(prefix_of(current)) for e in events]
        return events if len(kinds) >= 7 and "aftercare_due" in kinds else None

    events = await waited_for(whole, within=30)
    seen: set[str] = set()
    for event in events:
        assert event["causation_id"] is None or event["causation_id"] in seen, events
        seen.add(event["id"])
    kinds = [(e["topic"].removeprefix(prefix_of(current)), e["depth"]) for e in events]
    assert kinds[:4] == [
        ("screening_failed", 0),
        ("screening_passed", 0),
        ("session_scheduled", 1),
        ("session_completed", 2),
    ], kinds
    assert {k for k, _ in kinds[4:]} == {"aftercare_due", "session_scheduled", "session_cancelled"}
    assert events[0]["data"]["outcome"] == "deferred"
    assert [e["data"].get("sequence") for e in events if "session_scheduled" in e["topic"]] == [
        1,
        2,
    ]
    cancel = next(e for e in events if "session_cancelled" in e["topic"])
    assert cancel["data"]["reason"] == "(free text)"
    assert {e["site_id"] for e in events} == {"paris-01"}

    table = await clinicflow(current, "trace", client_id)
    assert table.returncode == 0, table.stderr
    assert events[0]["id"] in table.stdout
    for output in (table.stdout, json.dumps(events)):
        for secret in ("Ana", "Silva", "ana@example.org", PHONE, "PREGNANCY", "pregnan",
                       FREE_TEXT, *texts):  # fmt: skip
            assert secret not in output, f"{secret!r} printed by trace"

    stalled = await as_json(current, "stalled")
    mine = [p for p in stalled if p["client_id"] == client_id]
    assert [(p["plan_id"], p["next_sequence"], p["reason"], p["booked_at"]) for p in mine] == [
        (booked["plan_id"], 2, "not_booked", None)
    ]
    assert set(mine[0]) == {"plan_id", "client_id", "site_id", "next_sequence", "total_sessions",
                            "window_opens", "window_closes", "booked_at", "reason"}  # fmt: skip
    listed = await clinicflow(current, "stalled")
    assert booked["plan_id"] in listed.stdout
    assert "not_booked" in listed.stdout


async def test_status_then_dead_letters_listed_replayed_once_and_status_unhealthy(
    ops_stack: Stack, servers: Servers, publisher: KafkaPublisher
) -> None:
    current = ops_stack
    prefix = prefix_of(current)
    topics = Topics(prefix)
    bootstrap = servers.kafka_bootstrap_servers
    dlq = topics.dlq(EventKind.SCREENING_PASSED)

    healthy = await clinicflow(current, "status", "--json")
    found = json.loads(healthy.stdout)
    assert healthy.returncode == 0, found["problems"]
    assert {s["state"] for s in found["services"].values()} == {"ready"}
    assert found["services"]["notifier"]["due_unsent"] is not None
    groups = {(lag["group"], lag["topic"]) for lag in found["lag"]}
    assert (f"{prefix}scheduler", topics.name(EventKind.SCREENING_PASSED)) in groups
    assert (f"{prefix}notifier", topics.name(EventKind.SESSION_COMPLETED)) in groups
    assert found["dlq"][dlq] == 0

    down = await clinicflow(
        current, "status", CLINICFLOW_NOTIFIER_URL=f"http://127.0.0.1:{free_port()}"
    )
    assert down.returncode == 1
    assert "Traceback" not in down.stderr
    assert "notifier is down" in down.stdout

    # A passed screening at a site the scheduler does not know yet is dead-lettered at once.
    now = datetime.now(UTC).replace(microsecond=0)
    example = EXAMPLES[EventKind.SCREENING_PASSED]
    assert isinstance(example, ScreeningPassed)
    client_id = f"c-{uuid.uuid4().hex[:10]}"
    passed = example.model_copy(
        update={"client_id": client_id, "site_id": "late-01", "screening_id": uuid.uuid4(),
                "screened_at": now, "valid_until": now + timedelta(days=30)}
    )  # fmt: skip
    record = build(passed, source="intake", prefix=prefix)
    await send_record(publisher, record)
    # A stand-in letter, as a service leaves when the original was too large for the DLQ.
    await publisher.send(
        dlq, b'{"omitted": true}', key=b"c-big",
        headers=[("dlq-value-omitted", b"true"), ("dlq-original-topic", record.topic.encode())],
    )  # fmt: skip

    async def two_letters() -> list[dict[str, Any]] | None:
        letters: list[dict[str, Any]] = await as_json(current, "dlq", "list", "screening_passed")
        return letters if len(letters) == 2 else None

    letters = await waited_for(two_letters, within=60)
    letter = next(item for item in letters if not item["value_omitted"])
    assert letter["event_id"] == record.event_id
    assert letter["original_topic"] == record.topic
    assert letter["error_type"] == "PermanentError"
    assert "late-01" in letter["error"]
    shown = await as_json(
        current, "dlq", "show", dlq, str(letter["offset"]), "--partition", str(letter["partition"])
    )
    assert shown["id"] == record.event_id
    assert shown["subject"] == client_id
    assert shown["headers"]["dlq-original-topic"] == record.topic
    assert "data" not in shown
    assert "areas" not in json.dumps(shown)

    unhealthy = await clinicflow(current, "status", "--json")
    assert unhealthy.returncode == 1
    assert json.loads(unhealthy.stdout)["dlq"][dlq] == 2
    assert f"{dlq} holds 2 dead letters" in (await clinicflow(current, "status")).stdout

    dry = await as_json(current, "dlq", "replay", "screening_passed", "--dry-run")
    assert [item["event_id"] for item in dry["replayed"]] == [record.event_id]
    assert len(await same_id_records(bootstrap, record.topic, record.event_id)) == 1

    async with httpx.AsyncClient(auth=current.auth, timeout=10) as http:
        site = EXAMPLES[EventKind.SITE_UPDATED].model_dump(mode="json", exclude={"site_id"})
        put = await http.put(f"{current.url('scheduler')}/v1/sites/late-01", json=site)
        assert put.status_code in (200, 201), put.text
        replay = await clinicflow(current, "dlq", "replay", prefix + "screening_passed")
        assert replay.returncode == 0, replay.stderr
        assert "replayed 1 dead letters" in replay.stdout
        assert "skipped" in replay.stdout
        assert "value omitted" in replay.stdout

        async def planned() -> bool:
            url = f"{current.url('scheduler')}/v1/clients/{client_id}/plan"
            return (await http.get(url)).status_code == 200

        await eventually(planned, within=60)
    copies = await same_id_records(bootstrap, record.topic, record.event_id)
    assert len(copies) == 2, "replayed once, with the original CloudEvent id"
    assert copies[1].key == record.key.encode()
    assert not [k for k, _ in copies[1].headers if k.startswith("dlq-")]
    again = await as_json(current, "dlq", "replay", "screening_passed")
    assert (again["replayed"], again["skipped"]) == ([], [])
    assert len(await same_id_records(bootstrap, record.topic, record.event_id)) == 2


async def test_status_names_a_disabled_webhook_until_it_is_recovered(
    ops_stack: Stack, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    current = ops_stack
    notifier = current.url("notifier")
    scheduled = Topics(prefix_of(current)).name(EventKind.SESSION_SCHEDULED)
    async with httpx.AsyncClient(auth=current.auth, timeout=10) as http:
        created = await http.post(
            f"{notifier}/v1/webhooks",
            json={"url": "http://127.0.0.1:9/hook", "events": [scheduled]},
        )
        assert created.status_code == 201, created.text
        hook = created.json()["webhook_id"]
        assert (await as_json(current, "status"))["services"]["notifier"]["disabled_webhooks"] == 0
        # As the notifier leaves a subscription whose receiver failed for five days.
        webhooks = mongo[current.database("notifier")]["webhooks"]
        five_days_ago = datetime.now(UTC) - timedelta(days=5)
        disabled = {"disabled_at": datetime.now(UTC), "failing_since": five_days_ago}
        await webhooks.update_one({"_id": hook}, {"$set": disabled})
        found = await as_json(current, "status")
        assert found["services"]["notifier"]["disabled_webhooks"] == 1
        assert any("notifier has 1 disabled webhook subscriptions" in p for p in found["problems"])
        table = await clinicflow(current, "status")
        assert table.returncode == 1
        assert "disabled webhook subscriptions" in table.stdout
        recovered = await http.post(
            f"{notifier}/v1/webhooks/{hook}/recover", json={"since": five_days_ago.isoformat()}
        )
        assert recovered.status_code == 202, recovered.text
    assert (await as_json(current, "status"))["services"]["notifier"]["disabled_webhooks"] == 0


async def test_an_unknown_topic_is_a_usage_error(ops_stack: Stack) -> None:
    done = await clinicflow(ops_stack, "dlq", "list", "no_such_topic")
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
