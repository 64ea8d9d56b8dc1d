"""The notifier against the real broker and MongoDB-wire server, with a real webhook receiver."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase

from services.notifier import handlers
from services.notifier.app import create_app
from services.notifier.domain.steps import Delivery, DeliveryStatus, Step, StepStatus
from services.notifier.settings import NotifierSettings
from shared.envelope import build, tombstone
from shared.events import ClientContact, EventKind, SessionCompleted, SessionScheduled
from shared.examples import EXAMPLES
from shared.publisher import KafkaPublisher, send_record
from shared.topics import Topics
from shared.vocabulary import AftercareStep, Locale
from tests.conftest import Servers
from tests.receiver import Receiver, webhook_receiver
from tests.support import eventually, read_topic, serving

pytestmark = pytest.mark.integration
SECRET = "whsec_" + base64.b64encode(b"notifier-tests-secret-of-32-byte").decode()
Db = AsyncDatabase[dict[str, Any]]


def settings_for(servers: Servers, topics: Topics, db_name: str) -> NotifierSettings:
    return NotifierSettings(
        kafka_bootstrap_servers=servers.kafka_bootstrap_servers,
        mongodb_uri=servers.mongodb_uri,
        mongodb_database=db_name,
        topic_prefix=topics.prefix,
        environment="test",
        topic_partitions=3,
        webhooks_allow_private=True,
        timer_interval_seconds=0.2,
        delivery_backoff_seconds=0.2,
        webhook_retry_delays_seconds=[0.2, 0.4, 0.8, 1.6],
        webhook_retry_jitter=0,
    )


@contextlib.asynccontextmanager
async def running(settings: NotifierSettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with serving(app) as http:
        yield app, http


async def publish_contact(publisher: KafkaPublisher, topics: Topics, client_id: str) -> None:
    contact = EXAMPLES[EventKind.CLIENT_CONTACT]
    assert isinstance(contact, ClientContact)
    data = contact.model_copy(update={"client_id": client_id})
    await send_record(publisher, build(data, source="intake", prefix=topics.prefix))


def completed(
    client_id: str, *, sequence: int = 1, total: int = 6, ago: timedelta
) -> SessionCompleted:
    example = EXAMPLES[EventKind.SESSION_COMPLETED]
    return SessionCompleted.model_validate(
        {
            **example.model_dump(),
            "session_id": uuid.uuid4(),
            "client_id": client_id,
            "sequence": sequence,
            "total_sessions": total,
            "completed_at": datetime.now(UTC).replace(microsecond=0) - ago,
            "next_session_earliest": None if sequence == total else "2030-01-01",
        }
    )


async def subscribe(http: httpx.AsyncClient, receiver: Receiver, topics: Topics) -> str:
    response = await http.post(
        "/v1/webhooks",
        json={"url": receiver.url, "events": [f"{topics.prefix}aftercare_due"], "secret": SECRET},
    )
    assert response.status_code == 201, response.text
    webhook_id: str = response.json()["webhook_id"]
    return webhook_id


def steps_by_type(received: list[Any]) -> Counter[str]:
    return Counter(r.event["data"]["aftercare_id"] for r in received)


async def test_a_completed_session_gets_its_timeline_and_the_immediate_step_is_delivered(
    servers: Servers, topics: Topics, db_name: str, publisher: KafkaPublisher
) -> None:
    await publish_contact(publisher, topics, "c-after")
    async with (
        webhook_receiver() as receiver,
        running(settings_for(servers, topics, db_name)) as (
            _,
            http,
        ),
    ):
        await subscribe(http, receiver, topics)
        session = completed("c-after", ago=timedelta(minutes=1))
        await send_record(publisher, build(session, source="scheduler", prefix=topics.prefix))

        async def immediate_delivered() -> bool:
            return any(r.event["data"]["step"] == "immediate" for r in receiver.received)

        await eventually(immediate_delivered)
        timeline = (await http.get("/v1/clients/c-after/aftercare")).json()
    steps = {s["step"]: s for s in timeline}
    assert set(steps) == {"immediate", "day_1", "day_3", "day_7", "day_15"}
    assert steps["immediate"]["status"] in {"due", "delivered"}
    assert all(steps[s]["status"] == "scheduled" for s in ("day_1", "day_3", "day_7", "day_15"))
    assert steps["day_1"]["title"] != steps["immediate"]["title"]
    hit = next(r for r in receiver.received if r.event["data"]["step"] == "immediate")
    assert hit.verified(SECRET)["id"] == hit.headers["webhook-id"]
    assert hit.headers["content-type"] == "application/cloudevents+json"
    assert hit.event["type"] == f"{topics.prefix}aftercare_due"
    assert hit.event["data"]["locale"] == "fr"
    records = await read_topic(
        servers.kafka_bootstrap_servers, topics.name(EventKind.AFTERCARE_DUE), expect=1
    )
    assert len(records) == 1


async def test_two_replicas_deliver_each_of_200_due_steps_exactly_once(
    servers: Servers, topics: Topics, db_name: str, db: Db, publisher: KafkaPublisher
) -> None:
    now = datetime.now(UTC)
    steps = [
        {
            "_id": str(uuid.uuid4()),
            "client_id": f"c-bulk-{i % 20}",
            "site_id": "paris-01",
            "plan_id": str(uuid.uuid4()),
            "session_id": str(uuid.uuid4()),
            "step": "day_3",
            "due_at": now - timedelta(minutes=1),
            "status": "scheduled",
            "locale": "en",
            "title": "Day 3",
            "instructions": ["Keep using sunscreen."],
            "correlation_id": str(uuid.uuid4()),
            "cause_id": str(uuid.uuid4()),
            "created_at": now,
            "updated_at": now,
            "outbox": [],
            "outbox_pending": False,
        }
        for i in range(200)
    ]
    settings = settings_for(servers, topics, db_name)
    async with webhook_receiver() as receiver, running(settings) as (_, http), running(settings):
        await subscribe(http, receiver, topics)
        await db["aftercare_steps"].insert_many(steps)

        async def all_delivered() -> bool:
            delivered = {"status": "delivered"}
            return await db["aftercare_steps_history"].count_documents(delivered) == 200

        await eventually(all_delivered, within=120)

        async def all_posted() -> bool:
            return len(steps_by_type(receiver.received)) == 200

        await eventually(all_posted, within=60)
        await asyncio.sleep(1)
    per_step = steps_by_type(receiver.received)
    assert set(per_step) == {s["_id"] for s in steps}
    assert set(per_step.values()) == {1}
    records = await read_topic(
        servers.kafka_bootstrap_servers, topics.name(EventKind.AFTERCARE_DUE), expect=200
    )
    assert len(records) == 200
    assert len({json.loads(r.value)["data"]["aftercare_id"] for r in records}) == 200
    assert await db["aftercare_steps"].count_documents({}) == 0, "finished steps leave"
    log_deliveries = await db["deliveries_history"].count_documents(
        {"channel": "log", "status": "delivered"}
    )
    assert log_deliveries == 200


async def test_a_failing_webhook_is_retried_and_gets_the_message_once(
    servers: Servers, topics: Topics, db_name: str, publisher: KafkaPublisher
) -> None:
    async with (
        webhook_receiver(failures=2) as receiver,
        running(settings_for(servers, topics, db_name)) as (_, http),
    ):
        webhook_id = await subscribe(http, receiver, topics)
        await send_record(
            publisher,
            build(
                completed("c-retry", ago=timedelta(seconds=5)),
                source="scheduler",
                prefix=topics.prefix,
            ),
        )

        async def got_it() -> bool:
            return bool(receiver.received)

        await eventually(got_it, within=60)
        await asyncio.sleep(1.5)
        history = (await http.get(f"/v1/webhooks/{webhook_id}/deliveries")).json()
    assert receiver.refused == 2
    assert len(receiver.received) == 1
    hit = receiver.received[0]
    assert hit.verified(SECRET)["id"] == hit.headers["webhook-id"]
    assert [a["ok"] for a in history[0]["attempts"]] == [False, False, True]
    assert history[0]["status"] == "delivered"


async def test_a_tombstone_stops_further_deliveries(
    servers: Servers, topics: Topics, db_name: str, db: Db, publisher: KafkaPublisher
) -> None:
    await publish_contact(publisher, topics, "c-gone")
    async with (
        webhook_receiver() as receiver,
        running(settings_for(servers, topics, db_name)) as (
            _,
            http,
        ),
    ):
        await subscribe(http, receiver, topics)
        session = completed("c-gone", ago=timedelta(minutes=1))
        await send_record(publisher, build(session, source="scheduler", prefix=topics.prefix))

        async def first_delivered() -> bool:
            return len(receiver.received) == 1

        await eventually(first_delivered)
        await send_record(
            publisher, tombstone(EventKind.CLIENT_CONTACT, "c-gone", prefix=topics.prefix)
        )

        async def cancelled() -> bool:
            timeline = (await http.get("/v1/clients/c-gone/aftercare")).json()
            return {s["status"] for s in timeline if s["step"] != "immediate"} == {"cancelled"}

        await eventually(cancelled)
        await db["aftercare_steps"].update_many(
            {"client_id": "c-gone"}, {"$set": {"due_at": datetime.now(UTC) - timedelta(hours=1)}}
        )
        await asyncio.sleep(2)
    assert len(receiver.received) == 1
    gone = {"client_id": "c-gone", "kind": "client"}
    sent = [await db[name].count_documents(gone) for name in ("deliveries", "deliveries_history")]
    assert sent == [0, 1]


async def test_the_next_session_reminder_follows_bookings_and_cancellations(
    servers: Servers, topics: Topics, db_name: str, publisher: KafkaPublisher
) -> None:
    await send_record(
        publisher, build(EXAMPLES[EventKind.SITE_UPDATED], source="scheduler", prefix=topics.prefix)
    )
    example = EXAMPLES[EventKind.SESSION_SCHEDULED]
    starts = datetime(2030, 3, 12, 9, 0, tzinfo=UTC)
    second = SessionScheduled.model_validate(
        {
            **example.model_dump(),
            "client_id": "c-next",
            "session_id": uuid.uuid4(),
            "sequence": 2,
            "starts_at": starts,
            "ends_at": starts + timedelta(hours=1),
            "numbing_starts_at": starts - timedelta(hours=1),
        }
    )
    async with running(settings_for(servers, topics, db_name)) as (_, http):
        await send_record(publisher, build(second, source="scheduler", prefix=topics.prefix))

        async def reminder() -> list[dict[str, Any]]:
            timeline: list[dict[str, Any]] = (await http.get("/v1/clients/c-next/aftercare")).json()
            return [s for s in timeline if s["step"] == "next_session"]

        async def planned() -> bool:
            return len(await reminder()) == 1

        await eventually(planned)
        first = (await reminder())[0]
        assert first["due_at"].startswith("2030-03-10T09:00:00")
        later = starts + timedelta(days=7)
        moved = second.model_copy(
            update={
                "starts_at": later,
                "ends_at": later + timedelta(hours=1),
                "numbing_starts_at": later - timedelta(hours=1),
            }
        )
        await send_record(publisher, build(moved, source="scheduler", prefix=topics.prefix))

        async def was_moved() -> bool:
            due: str = (await reminder())[0]["due_at"]
            return due.startswith("2030-03-17T09:00:00")

        await eventually(was_moved)
        cancel = EXAMPLES[EventKind.SESSION_CANCELLED].model_copy(
            update={"client_id": "c-next", "session_id": second.session_id}
        )
        await send_record(publisher, build(cancel, source="scheduler", prefix=topics.prefix))

        async def was_cancelled() -> bool:
            status: str = (await reminder())[0]["status"]
            return status == "cancelled"

        await eventually(was_cancelled)


async def test_webhooks_receive_other_subscribed_events_verbatim_and_bad_urls_are_refused(
    servers: Servers, topics: Topics, db_name: str, publisher: KafkaPublisher
) -> None:
    settings = settings_for(servers, topics, db_name)
    async with webhook_receiver() as receiver, running(settings) as (_, http):
        created = await http.post(
            "/v1/webhooks",
            json={
                "url": receiver.url,
                "events": [f"{topics.prefix}session_completed"],
                "secret": SECRET,
            },
        )
        assert created.status_code == 201
        assert created.json()["secret"] == SECRET, "shown once, when created"
        listed = (await http.get("/v1/webhooks")).json()
        assert listed, "the subscription is listed"
        assert all("secret" not in webhook for webhook in listed), "and never again"
        record = build(
            completed("c-hook", ago=timedelta(days=40)), source="scheduler", prefix=topics.prefix
        )
        await send_record(publisher, record)

        async def posted() -> bool:
            return any(r.event["type"].endswith("session_completed") for r in receiver.received)

        await eventually(posted)
        hit = next(r for r in receiver.received if r.event["type"].endswith("session_completed"))
        assert hit.body == record.value
        unknown = await http.post(
            "/v1/webhooks",
            json={"url": receiver.url, "events": ["clinic.teleported"], "secret": SECRET},
        )
        assert (unknown.status_code, unknown.json()["errors"][0]["field"]) == (422, "events")
        short = await http.post(
            "/v1/webhooks",
            json={"url": receiver.url, "events": [f"{topics.prefix}aftercare_due"], "secret": "x"},
        )
        assert (short.status_code, short.json()["errors"][0]["field"]) == (422, "secret")
    strict = settings.model_copy(update={"webhooks_allow_private": False})
    async with running(strict) as (_, http):
        for url in ("http://127.0.0.1:9/hook", "https://10.0.0.8/hook", "https://[::1]/hook"):
            refused = await http.post(
                "/v1/webhooks",
                json={"url": url, "events": [f"{topics.prefix}aftercare_due"], "secret": SECRET},
            )
            assert refused.status_code == 422, url
            assert refused.json()["errors"][0]["field"] == "url"


async def client_deliveries(db: Db, client_id: str) -> dict[str, dict[str, Any]]:
    """The client's deliveries, live and finished, by channel."""
    found: dict[str, dict[str, Any]] = {}
    for name in ("deliveries", "deliveries_history"):
        async for document in db[name].find({"client_id": client_id, "kind": "client"}):
            found[document["channel"]] = document
    return found


async def immediate_status(http: httpx.AsyncClient, client_id: str) -> str:
    timeline = (await http.get(f"/v1/clients/{client_id}/aftercare")).json()
    return str(next((s["status"] for s in timeline if s["step"] == "immediate"), "absent"))


async def test_a_contact_that_arrives_after_the_step_fell_due_still_gets_its_sms(
    servers: Servers, topics: Topics, db_name: str, db: Db, publisher: KafkaPublisher
) -> None:
    """Behind a backlog, or when the contact is published late, the step falls due before the
    notifier knows how to reach the client: the SMS waits for the contact instead of being
    skipped while the log line marks the step delivered."""
    settings = settings_for(servers, topics, db_name).model_copy(update={"sms_enabled": True})
    async with running(settings) as (_, http):
        session = completed("c-late", ago=timedelta(minutes=1))
        await send_record(publisher, build(session, source="scheduler", prefix=topics.prefix))

        async def sms_waiting() -> bool:
            sms = (await client_deliveries(db, "c-late")).get("sms")
            return sms is not None and len(sms["attempts"]) >= 1

        await eventually(sms_waiting)
        found = await client_deliveries(db, "c-late")
        assert found["sms"]["status"] == "pending"
        assert found["sms"]["attempts"][0]["error"] == "no contact details for this client yet"
        assert found["log"]["status"] == "delivered"
        assert await immediate_status(http, "c-late") == "due", "the SMS has not gone out yet"

        await publish_contact(publisher, topics, "c-late")

        async def sms_sent() -> bool:
            sms = (await client_deliveries(db, "c-late")).get("sms")
            return sms is not None and sms["status"] == "delivered"

        await eventually(sms_sent)

        async def step_delivered() -> bool:
            return await immediate_status(http, "c-late") == "delivered"

        await eventually(step_delivered)


async def test_a_contact_that_never_arrives_fails_the_step_with_a_reason(
    servers: Servers, topics: Topics, db_name: str, db: Db, publisher: KafkaPublisher
) -> None:
    settings = settings_for(servers, topics, db_name).model_copy(
        update={"sms_enabled": True, "delivery_max_attempts": 3}
    )
    async with running(settings) as (_, http):
        session = completed("c-unknown", ago=timedelta(minutes=1))
        await send_record(publisher, build(session, source="scheduler", prefix=topics.prefix))

        async def step_failed() -> bool:
            return await immediate_status(http, "c-unknown") == "failed"

        await eventually(step_failed)
    sms = (await client_deliveries(db, "c-unknown"))["sms"]
    assert sms["status"] == "failed"
    assert [a["error"] for a in sms["attempts"]] == ["no contact details for this client yet"] * 3


async def test_a_channel_the_client_gave_no_address_for_is_cancelled_not_failed(
    servers: Servers, topics: Topics, db_name: str, db: Db, publisher: KafkaPublisher
) -> None:
    contact = EXAMPLES[EventKind.CLIENT_CONTACT]
    assert isinstance(contact, ClientContact)
    email_only = contact.model_copy(update={"client_id": "c-email", "phone": None})
    await send_record(publisher, build(email_only, source="intake", prefix=topics.prefix))
    settings = settings_for(servers, topics, db_name).model_copy(update={"sms_enabled": True})
    async with running(settings) as (_, http):
        session = completed("c-email", ago=timedelta(minutes=1))
        await send_record(publisher, build(session, source="scheduler", prefix=topics.prefix))

        async def step_delivered() -> bool:
            return await immediate_status(http, "c-email") == "delivered"

        await eventually(step_delivered)
    sms = (await client_deliveries(db, "c-email"))["sms"]
    assert sms["status"] == "cancelled"
    assert sms["attempts"][-1]["error"] == "the client gave no address for sms"


async def test_a_receiver_that_hangs_delays_no_client_message(
    servers: Servers, topics: Topics, db_name: str, db: Db, publisher: KafkaPublisher
) -> None:
    """Every POST to this webhook hangs until the test lets go: meanwhile all five due steps
    still reach the client, because each receiver has its own lane."""
    await publish_contact(publisher, topics, "c-busy")
    async with (
        webhook_receiver() as receiver,
        running(settings_for(servers, topics, db_name)) as (_, http),
    ):
        receiver.held = asyncio.Event()
        await subscribe(http, receiver, topics)
        session = completed("c-busy", ago=timedelta(days=30))  # every step is due at once
        await send_record(publisher, build(session, source="scheduler", prefix=topics.prefix))

        async def webhook_hanging() -> bool:
            return receiver.arrived >= 1

        await eventually(webhook_hanging)

        async def all_steps_delivered() -> bool:
            timeline = (await http.get("/v1/clients/c-busy/aftercare")).json()
            return len(timeline) == 5 and {s["status"] for s in timeline} == {"delivered"}

        await eventually(all_steps_delivered)
        assert receiver.received == [], "the webhook has not answered once yet"
        receiver.held.set()

        async def webhook_caught_up() -> bool:
            return len(steps_by_type(receiver.received)) == 5

        await eventually(webhook_caught_up)


async def test_retention_prunes_old_markers_leases_and_delivery_records(
    servers: Servers, topics: Topics, db_name: str, db: Db
) -> None:
    """Markers, leases nobody holds and finished deliveries stop growing with history."""
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=120), now - timedelta(days=1)
    for when, name in ((old, "old"), (recent, "recent")):
        await db["processed_events"].insert_one(
            {"_id": f"g:{name}", "group": "g", "processed_at": when}
        )
        await db["deliveries_history"].insert_one(
            {"_id": f"e-{name}:log", "status": "delivered", "updated_at": when}
        )
        expired = when if name == "old" else now - timedelta(hours=1)
        lease = {"resource": f"reports:{name}", "generation": 0, "token": "t"}
        lease |= {"expires_at": expired}
        await db["locks"].insert_one({"_id": f"reports:{name}#0"} | lease)
    relayed = {"resource": "aftercare_steps:s-1", "generation": 0, "token": "t", "expires_at": old}
    await db["locks"].insert_one({"_id": "aftercare_steps:s-1#0"} | relayed)
    settings = settings_for(servers, topics, db_name).model_copy(
        update={"retention_interval_seconds": 0.3}
    )
    async with running(settings):

        async def pruned() -> bool:
            return not await db["deliveries_history"].find_one({"_id": "e-old:log"})

        await eventually(pruned)
        await asyncio.sleep(0.5)
    assert await db["processed_events"].distinct("_id") == ["g:recent"]
    assert await db["deliveries_history"].distinct("_id") == ["e-recent:log"]
    leases = set(await db["locks"].distinct("_id"))
    assert "reports:old#0" not in leases
    assert "reports:recent#0" in leases, "expired an hour ago: kept"
    assert "aftercare_steps:s-1#0" not in leases, "the relay's sweep took it over and released it"


async def test_work_a_killed_notifier_left_half_done_is_finished(
    servers: Servers, topics: Topics, db_name: str, db: Db
) -> None:
    """Killed after a delivery went out but before its step was settled, and before the
    delivery moved to history: `tidy` settles the step and completes the move (issue 12)."""
    now = datetime.now(UTC)
    async with running(settings_for(servers, topics, db_name)) as (app, http):
        ctx = app.state.context
        step = Step(
            aftercare_id=str(uuid.uuid4()), client_id="c-cut", site_id="paris-01",
            plan_id=str(uuid.uuid4()), session_id=str(uuid.uuid4()), step=AftercareStep.DAY_1,
            due_at=now - timedelta(hours=1), status=StepStatus.DUE, locale=Locale.EN,
            title="Day 1", instructions=["x"], correlation_id=str(uuid.uuid4()),
            cause_id=str(uuid.uuid4()), event_id="e-cut", released_at=now - timedelta(hours=1),
            created_at=now - timedelta(hours=2),
        )  # fmt: skip
        assert await ctx.uow.insert_new(ctx.store.step_store, [step]) == 1
        sent = Delivery(
            delivery_id="e-cut:log", kind="client", channel="log", event_id="e-cut",
            aftercare_id=step.aftercare_id, client_id="c-cut", status=DeliveryStatus.DELIVERED,
            next_attempt_at=now, created_at=now,
        )  # fmt: skip
        assert await ctx.uow.insert_new(ctx.store.delivery_store, [sent]) == 1
        assert await immediate_status(http, "c-cut") == "absent"  # only a day_1 step here
        await handlers.tidy(ctx)
        timeline = (await http.get("/v1/clients/c-cut/aftercare")).json()
    assert [s["status"] for s in timeline] == ["delivered"]
    assert await db["deliveries"].count_documents({}) == 0
    assert await db["deliveries_history"].count_documents({"_id": "e-cut:log"}) == 1
