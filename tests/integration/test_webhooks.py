"""Webhooks as an integrator meets them (SPEC section 7): verified by the official Standard
Webhooks libraries, every workflow event of chosen sites, secrets that rotate, retries that
outlast an outage, recovery, disabling, `abort-message`, and receivers that do not wait on
each other. Real broker, real MongoDB-wire server, real receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase
from standardwebhooks import Webhook as StandardWebhook

from scripts.infra import free_port
from shared.access import Role
from shared.envelope import Record, build
from shared.events import COMPACTED, EventKind, SiteUpdated
from shared.examples import EXAMPLES
from shared.publisher import KafkaPublisher, send_record
from shared.topics import Topics
from tests.access import bearer, issue_key
from tests.conftest import Servers
from tests.integration.test_notifier import completed, running, settings_for
from tests.procs import REPO
from tests.receiver import webhook_receiver
from tests.support import eventually, waited_for

pytestmark = pytest.mark.integration
Db = AsyncDatabase[dict[str, Any]]
WORKFLOW = [kind for kind in EventKind if kind not in COMPACTED]
NODE_DIR = REPO / "tests" / "node"


def guide_sample(heading: str, language: str) -> str:
    page = (REPO / "docs" / "integrators.md").read_text(encoding="utf-8")
    section = page.split(heading, 1)[1]
    match = re.search(rf"```{language}\n(.*?)```", section, re.DOTALL)
    assert match, f"the integrator guide has no {language} sample under {heading!r}"
    return match.group(1)


def a_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


async def subscribe(
    http: httpx.AsyncClient, url: str, events: list[str], **extra: Any
) -> dict[str, Any]:
    response = await http.post("/v1/webhooks", json={"url": url, "events": events, **extra})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def workflow_records(topics: Topics, site_id: str) -> list[Record]:
    """One record of each workflow type, for `site_id`, each about a client of its own."""
    records = []
    for kind in WORKFLOW:
        example = EXAMPLES[kind]
        data = example.model_copy(
            update={"site_id": site_id, "client_id": f"c-{uuid.uuid4().hex[:10]}"}
        )
        records.append(build(data, source="tests", prefix=topics.prefix))
    return records


async def publish_site(publisher: KafkaPublisher, topics: Topics, site_id: str) -> None:
    example = EXAMPLES[EventKind.SITE_UPDATED]
    assert isinstance(example, SiteUpdated)
    site = example.model_copy(update={"site_id": site_id})
    await send_record(publisher, build(site, source="scheduler", prefix=topics.prefix))


@contextlib.asynccontextmanager
async def sample_receiver(command: list[str], secret: str, port: int) -> AsyncIterator[list[str]]:
    """Run a guide's sample as written; yields the lines it prints, as they come."""
    env = {**os.environ, "WEBHOOK_SECRET": secret, "PORT": str(port)}
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    lines: list[str] = []

    async def read() -> None:
        assert process.stdout is not None
        while raw := await process.stdout.readline():
            lines.append(raw.decode().rstrip("\n"))

    reader = asyncio.create_task(read())

    async def listening() -> bool:
        assert process.returncode is None, "the sample stopped:\n" + "\n".join(lines)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        return False

    try:
        await eventually(listening, within=30)
        yield lines
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=15)
        await reader


async def test_the_guides_python_and_node_receivers_verify_every_workflow_event(
    servers: Servers, topics: Topics, db_name: str, publisher: KafkaPublisher, tmp_path: Path
) -> None:
    """The samples of docs/integrators.md, run as written, verify each delivery with the
    official library of their language, and refuse a forged one."""
    node = shutil.which("node")
    assert node, "node is needed for the Node sample (see the README)"
    assert (NODE_DIR / "node_modules" / "standardwebhooks").is_dir(), "run `make install` first"
    python_script = tmp_path / "receiver.py"
    python_script.write_text(guide_sample("### Verifying a delivery (Python)", "python"))
    node_script = NODE_DIR / f".sample-receiver-{uuid.uuid4().hex[:8]}.mjs"  # finds node_modules
    node_script.write_text(guide_sample("### Verifying a delivery (Node)", "javascript"))
    ports = {"python": free_port(), "node": free_port()}
    everything = [topics.name(kind) for kind in WORKFLOW]
    try:
        async with running(settings_for(servers, topics, db_name)) as (_, http):
            generated = await subscribe(http, f"http://127.0.0.1:{ports['python']}/", everything)
            chosen = a_secret()
            given = await subscribe(
                http, f"http://127.0.0.1:{ports['node']}/", everything, secret=chosen
            )
            assert generated["secret"].startswith("whsec_")
            assert given["secret"] == chosen
            async with (
                sample_receiver([sys.executable, str(python_script)], generated["secret"],
                                ports["python"]) as python_lines,
                sample_receiver([node, str(node_script)], chosen, ports["node"]) as node_lines,
            ):  # fmt: skip
                records = workflow_records(topics, "paris-01")
                for record in records:
                    await send_record(publisher, record)
                wanted = {f"verified {r.event_id} {r.topic}" for r in records}

                async def all_verified() -> bool:
                    return wanted <= set(python_lines) and wanted <= set(node_lines)

                await eventually(all_verified, within=60)
                async with httpx.AsyncClient() as outsider:
                    for port in ports.values():
                        forged = await outsider.post(
                            f"http://127.0.0.1:{port}/",
                            content=records[0].value,
                            headers={
                                "webhook-id": records[0].event_id,
                                "webhook-timestamp": str(int(datetime.now(UTC).timestamp())),
                                "webhook-signature": "v1," + base64.b64encode(b"0" * 32).decode(),
                            },
                        )
                        assert forged.status_code == 401
    finally:
        node_script.unlink()
    for lines in (python_lines, node_lines):
        assert not any("Error" in line or "Traceback" in line for line in lines), lines


async def test_subscriptions_choose_their_sites_within_the_key(
    servers: Servers, topics: Topics, db_name: str, publisher: KafkaPublisher
) -> None:
    await publish_site(publisher, topics, "lyon-02")
    paris_only = await issue_key(
        servers.kafka_bootstrap_servers, topics.prefix, Role.INTEGRATOR, ["paris-01"]
    )
    async with (
        webhook_receiver() as receiver,
        running(settings_for(servers, topics, db_name)) as (_, http),
    ):
        everything = [topics.name(kind) for kind in WORKFLOW]
        created = await subscribe(http, receiver.url, everything, sites=["lyon-02"])
        assert created["sites"] == ["lyon-02"]
        outside = await http.post(
            "/v1/webhooks",
            json={"url": receiver.url, "events": everything, "sites": ["lyon-02"]},
            headers=bearer(paris_only),
        )
        assert outside.status_code == 403, outside.text
        unknown = await http.post(
            "/v1/webhooks",
            json={"url": receiver.url, "events": everything, "sites": ["nowhere-9"]},
        )
        assert (unknown.status_code, unknown.json()["errors"][0]["field"]) == (422, "sites")
        lyon, paris = workflow_records(topics, "lyon-02"), workflow_records(topics, "paris-01")
        for record in paris + lyon:
            await send_record(publisher, record)

        async def lyon_arrived() -> bool:
            ids = {r.headers["webhook-id"] for r in receiver.received}
            return {r.event_id for r in lyon} <= ids

        await eventually(lyon_arrived)
        await asyncio.sleep(1)  # a Paris event would have come by now
    assert {r.event["siteid"] for r in receiver.received} == {"lyon-02"}
    assert {r.event["type"] for r in receiver.received} == set(everything)


async def test_while_a_secret_rotates_both_secrets_verify_each_delivery(
    servers: Servers, topics: Topics, db_name: str, publisher: KafkaPublisher
) -> None:
    async with (
        webhook_receiver() as receiver,
        running(settings_for(servers, topics, db_name)) as (_, http),
    ):
        created = await subscribe(http, receiver.url, [topics.name(EventKind.SESSION_SCHEDULED)])
        old = created["secret"]
        rotated = await http.post(f"/v1/webhooks/{created['webhook_id']}/rotate")
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new.startswith("whsec_")
        assert new != old
        (record,) = [
            r for r in workflow_records(topics, "paris-01") if r.topic.endswith("scheduled")
        ]
        await send_record(publisher, record)

        async def arrived() -> bool:
            return bool(receiver.received)

        await eventually(arrived)
    (hit,) = receiver.received
    assert len(hit.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert StandardWebhook(secret).verify(hit.body, hit.headers)["id"] == record.event_id


async def test_deliveries_that_failed_during_an_outage_are_recovered(
    servers: Servers, topics: Topics, db_name: str, publisher: KafkaPublisher
) -> None:
    """The receiver is down until every retry ran out; its owner recovers, and each event
    arrives, once, under its own id."""
    settings = settings_for(servers, topics, db_name).model_copy(
        update={"webhook_retry_delays_seconds": [0.1, 0.1]}
    )
    async with webhook_receiver() as receiver, running(settings) as (_, http):
        receiver.down = True
        started = datetime.now(UTC) - timedelta(seconds=1)
        created = await subscribe(http, receiver.url, [topics.name(kind) for kind in WORKFLOW])
        hook = created["webhook_id"]
        records = workflow_records(topics, "paris-01")
        for record in records:
            await send_record(publisher, record)

        async def all_failed() -> list[dict[str, Any]] | None:
            found = (await http.get(f"/v1/webhooks/{hook}/deliveries")).json()
            mine = [d for d in found if d["event_id"] in {r.event_id for r in records}]
            done = len(mine) == len(records) and all(d["status"] == "failed" for d in mine)
            return mine if done else None

        failed = await waited_for(all_failed, within=60)
        assert all(len(d["attempts"]) == 3 for d in failed), "the first try and two retries"
        assert receiver.received == []
        status = (await http.get(f"/v1/webhooks/{hook}")).json()
        assert status["failing_since"] is not None
        receiver.down = False
        recovered = await http.post(
            f"/v1/webhooks/{hook}/recover", json={"since": started.isoformat()}
        )
        assert recovered.status_code == 202, recovered.text
        assert recovered.json()["recovered"] >= len(records)

        async def all_arrived() -> bool:
            ids = [r.headers["webhook-id"] for r in receiver.received]
            return {r.event_id for r in records} <= set(ids)

        await eventually(all_arrived)
        healthy = (await http.get(f"/v1/webhooks/{hook}")).json()
        bad_since = await http.post(f"/v1/webhooks/{hook}/recover", json={"since": "yesterday"})
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == len(set(ids)), "each event once"
    assert all(r.event["id"] == r.headers["webhook-id"] for r in receiver.received)
    assert healthy["failing_since"] is None
    assert healthy["status"] == "active"
    assert (bad_since.status_code, bad_since.json()["errors"][0]["field"]) == (422, "since")


async def test_a_webhook_failing_for_five_days_is_disabled_and_can_be_recovered(
    servers: Servers, topics: Topics, db_name: str, db: Db, publisher: KafkaPublisher
) -> None:
    async with (
        webhook_receiver() as receiver,
        running(settings_for(servers, topics, db_name)) as (_, http),
    ):
        receiver.down = True
        created = await subscribe(http, receiver.url, [topics.name(EventKind.SESSION_SCHEDULED)])
        hook = created["webhook_id"]
        five_days_ago = datetime.now(UTC) - timedelta(days=5, minutes=1)
        await db["webhooks"].update_one({"_id": hook}, {"$set": {"failing_since": five_days_ago}})
        scheduled = [r for r in workflow_records(topics, "paris-01") if "scheduled" in r.topic]
        await send_record(publisher, scheduled[0])

        async def disabled() -> dict[str, Any] | None:
            found: dict[str, Any] = (await http.get(f"/v1/webhooks/{hook}")).json()
            return found if found["status"] == "disabled" else None

        shown = await waited_for(disabled)
        assert shown["disabled_at"]
        assert "5 days" in shown["disabled_reason"]
        metrics = (await http.get("/metrics")).text
        assert re.search(r"^clinicflow_webhooks_disabled_total [1-9]", metrics, re.M), metrics
        assert (await http.get("/v1/ops/status")).json()["disabled_webhooks"] == 1
        tried = receiver.refused
        later = [r for r in workflow_records(topics, "paris-01") if "scheduled" in r.topic]
        await send_record(publisher, later[0])

        async def kept_as_failed() -> bool:
            found = (await http.get(f"/v1/webhooks/{hook}/deliveries")).json()
            return any(
                d["event_id"] == later[0].event_id and d["status"] == "failed" for d in found
            )

        await eventually(kept_as_failed)
        assert receiver.refused == tried, "a disabled webhook is not called"
        receiver.down = False
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        recovered = await http.post(f"/v1/webhooks/{hook}/recover", json={"since": since})
        assert recovered.status_code == 202, recovered.text

        async def caught_up() -> bool:
            ids = {r.headers["webhook-id"] for r in receiver.received}
            return {scheduled[0].event_id, later[0].event_id} <= ids

        await eventually(caught_up)
        assert (await http.get(f"/v1/webhooks/{hook}")).json()["status"] == "active"
        assert (await http.get("/v1/ops/status")).json()["disabled_webhooks"] == 0


async def test_a_receiver_that_asks_to_abort_a_message_is_not_retried(
    servers: Servers, topics: Topics, db_name: str, publisher: KafkaPublisher
) -> None:
    async with (
        webhook_receiver() as receiver,
        running(settings_for(servers, topics, db_name)) as (_, http),
    ):
        receiver.abort = True
        created = await subscribe(http, receiver.url, [topics.name(EventKind.SESSION_SCHEDULED)])
        (record,) = [r for r in workflow_records(topics, "paris-01") if "scheduled" in r.topic]
        await send_record(publisher, record)

        async def ended() -> dict[str, Any] | None:
            found = (await http.get(f"/v1/webhooks/{created['webhook_id']}/deliveries")).json()
            return found[0] if found and found[0]["status"] != "pending" else None

        delivery = await waited_for(ended)
        await asyncio.sleep(1.5)  # the retry schedule would have tried again by now
    assert receiver.refused == 1
    assert delivery["status"] == "cancelled"
    assert "asked not to be sent this message again" in delivery["attempts"][-1]["error"]


async def test_a_slow_receiver_delays_no_other_receiver(
    servers: Servers, topics: Topics, db_name: str, publisher: KafkaPublisher
) -> None:
    """The slow receiver has more due deliveries than one read of the queue returns, all
    older than the other's; its lane is full, so the others must still be read and sent."""
    patient = settings_for(servers, topics, db_name).model_copy(
        update={"webhook_retry_delays_seconds": [0.5] * 200}
    )
    async with (
        webhook_receiver() as slow,
        webhook_receiver() as fast,
        running(patient) as (app, http),
    ):
        app.state.context.batch = 2
        slow.held = asyncio.Event()
        everything = [topics.name(kind) for kind in WORKFLOW]
        await subscribe(http, slow.url, everything)
        for record in workflow_records(topics, "paris-01"):
            await send_record(publisher, record)

        async def slow_lane_full() -> bool:
            return slow.arrived >= 4

        await eventually(slow_lane_full)
        await subscribe(http, fast.url, everything)
        session = completed("c-fast", ago=timedelta(days=30))
        await send_record(publisher, build(session, source="scheduler", prefix=topics.prefix))

        async def fast_served() -> bool:
            return len(fast.received) >= 6  # the session and its five due steps

        await eventually(fast_served)
        assert slow.received == [], "the slow receiver has not answered once"
        slow.held.set()

        async def slow_caught_up() -> bool:
            return len(slow.received) >= len(WORKFLOW) + 6

        await eventually(slow_caught_up)
