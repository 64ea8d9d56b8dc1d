"""The scheduler through Kafka and HTTP, against the real broker and MongoDB-wire server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase

from services.scheduler.app import create_app
from services.scheduler.domain.model import Plan
from services.scheduler.domain.slots import Slot
from services.scheduler.handlers import reap_reservations
from services.scheduler.settings import SchedulerSettings
from shared.envelope import Record, build
from shared.events import EventKind, ScreeningPassed
from shared.examples import EXAMPLES
from shared.publisher import KafkaPublisher, send_record
from shared.topics import Topics
from tests.conftest import Servers
from tests.procs import REPO
from tests.support import eventually, read_topic, serving

pytestmark = pytest.mark.integration

PARIS = {
    "name": "Paris Opéra",
    "timezone": "Europe/Paris",
    "opening_hours": {
        "mon": ["09:00", "19:00"],
        "tue": ["09:00", "19:00"],
        "wed": ["09:00", "19:00"],
        "thu": ["09:00", "19:00"],
        "fri": ["09:00", "19:00"],
        "sat": ["10:00", "17:00"],
    },
    "rooms": 3,
}
TINY = {**PARIS, "name": "One-room studio", "rooms": 1}


@dataclass
class Scheduler:
    http: httpx.AsyncClient
    app: FastAPI
    topics: Topics
    db: AsyncDatabase[dict[str, Any]]
    publisher: KafkaPublisher
    bootstrap: str

    async def records(self, kind: EventKind, expect: int) -> list[Any]:
        return await read_topic(self.bootstrap, self.topics.name(kind), expect=expect)

    async def passed(self, client_id: str, site_id: str = "paris-01", **changes: Any) -> Record:
        example = EXAMPLES[EventKind.SCREENING_PASSED]
        assert isinstance(example, ScreeningPassed)
        now = datetime.now(UTC).replace(microsecond=0)
        data = ScreeningPassed.model_validate(
            {
                **example.model_dump(),
                "screening_id": uuid.uuid4(),
                "client_id": client_id,
                "site_id": site_id,
                "screened_at": now,
                "valid_until": now + timedelta(days=90),
                **changes,
            }
        )
        record = build(data, source="intake", prefix=self.topics.prefix)
        await send_record(self.publisher, record)
        return record

    async def plan_of(self, client_id: str) -> dict[str, Any]:
        async def has_plan() -> bool:
            return (await self.http.get(f"/v1/clients/{client_id}/plan")).status_code == 200

        await eventually(has_plan)
        plan: dict[str, Any] = (await self.http.get(f"/v1/clients/{client_id}/plan")).json()
        return plan


@contextlib.asynccontextmanager
async def running(settings: SchedulerSettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with serving(app) as http:
        yield app, http


def settings_for(
    servers: Servers, topic_prefix: str, db_name: str, **extra: Any
) -> SchedulerSettings:
    return SchedulerSettings(
        kafka_bootstrap_servers=servers.kafka_bootstrap_servers,
        mongodb_uri=servers.mongodb_uri,
        mongodb_database=db_name,
        topic_prefix=topic_prefix,
        environment="test",
        topic_partitions=3,
        **extra,
    )


@pytest.fixture
async def scheduler(
    servers: Servers,
    topics: Topics,
    db_name: str,
    db: AsyncDatabase[dict[str, Any]],
    publisher: KafkaPublisher,
) -> AsyncIterator[Scheduler]:
    async with running(settings_for(servers, topics.prefix, db_name)) as (app, http):
        assert (await http.put("/v1/sites/paris-01", json=PARIS)).status_code == 201
        yield Scheduler(http, app, topics, db, publisher, servers.kafka_bootstrap_servers)


def local(moment: str, timezone: str = "Europe/Paris") -> datetime:
    return datetime.fromisoformat(moment).astimezone(ZoneInfo(timezone))


def inside_paris_hours(starts: datetime, ends: datetime) -> bool:
    day = PARIS["opening_hours"].get(starts.strftime("%a").lower())  # type: ignore[attr-defined]
    if day is None:
        return False
    opens, closes = (time.fromisoformat(t) for t in day)
    return bool(opens <= starts.time() and ends.time() <= closes and starts.date() == ends.date())


async def test_a_passed_screening_books_a_first_session(scheduler: Scheduler) -> None:
    before = datetime.now(UTC)
    screening = await scheduler.passed("c-first")
    plan = await scheduler.plan_of("c-first")
    assert (plan["total_sessions"], plan["interval_days"]) == (6, 30)
    assert plan["status"] == "active"
    assert len(plan["sessions"]) == 1

    records = await scheduler.records(EventKind.SESSION_SCHEDULED, expect=1)
    assert len(records) == 1
    event = json.loads(records[0].value)
    data = event["data"]
    assert (data["sequence"], data["total_sessions"], data["client_id"]) == (1, 6, "c-first")
    starts, ends = local(data["starts_at"]), local(data["ends_at"])
    assert starts - before >= timedelta(hours=24)
    assert ends - starts == timedelta(minutes=60)
    assert data["needle_depth_mm"] == 1.5
    numbing = local(data["numbing_starts_at"])
    assert starts - numbing == timedelta(minutes=60)
    assert inside_paris_hours(numbing, ends)
    screening_event = json.loads(screening.value or b"")
    assert event["correlationid"] == screening_event["correlationid"]
    assert event["causationid"] == screening_event["id"]
    assert records[0].key == b"c-first"


async def test_the_same_screening_delivered_twice_makes_one_plan(scheduler: Scheduler) -> None:
    record = await scheduler.passed("c-twice")
    await send_record(scheduler.publisher, record)
    await scheduler.plan_of("c-twice")
    await asyncio.sleep(1)
    assert await scheduler.db["plans"].count_documents({"client_id": "c-twice"}) == 1
    assert len(await scheduler.records(EventKind.SESSION_SCHEDULED, expect=2)) == 1


async def test_completing_books_the_next_session_and_publishes_once(scheduler: Scheduler) -> None:
    await scheduler.passed("c-complete")
    plan = await scheduler.plan_of("c-complete")
    session_id = plan["sessions"][0]["session_id"]
    completion = {
        "needle_depth_mm": 1.5,
        "areas": ["face"],
        "anesthetic_used": True,
        "bleeding": True,
        "practitioner_id": "pr-7",
        "notes": "tolerated well",
    }
    done = await scheduler.http.post(f"/v1/sessions/{session_id}/complete", json=completion)
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["session"]["status"] == "completed"
    upcoming = body["next_session"]
    assert upcoming["sequence"] == 2

    again = await scheduler.http.post(f"/v1/sessions/{session_id}/complete", json=completion)
    assert again.status_code == 409
    assert again.json()["reason"] == "already_completed"

    completed = await scheduler.records(EventKind.SESSION_COMPLETED, expect=2)
    assert len(completed) == 1
    data = json.loads(completed[0].value)["data"]
    assert data["timezone"] == "Europe/Paris"
    assert (data["sequence"], data["total_sessions"], data["bleeding"]) == (1, 6, True)
    completed_on = local(data["completed_at"]).date()
    assert data["next_session_earliest"] == str(completed_on + timedelta(days=30))

    scheduled = await scheduler.records(EventKind.SESSION_SCHEDULED, expect=2)
    assert [json.loads(r.value)["data"]["sequence"] for r in scheduled] == [1, 2]
    second = json.loads(scheduled[1].value)
    assert local(second["data"]["starts_at"]).date() >= completed_on + timedelta(days=30)
    assert second["causationid"] == json.loads(completed[0].value)["id"]
    sessions = (await scheduler.http.get("/v1/clients/c-complete/sessions")).json()
    assert [s["status"] for s in sessions] == ["completed", "scheduled"]


async def test_the_last_session_completes_the_plan(scheduler: Scheduler) -> None:
    await scheduler.passed("c-mild", severity="mild", areas=["face"], concerns=["fine_lines"])
    plan = await scheduler.plan_of("c-mild")
    assert (plan["total_sessions"], plan["maintenance_after_days"]) == (1, 90)
    assert plan["numbing"] is False
    session_id = plan["sessions"][0]["session_id"]
    done = await scheduler.http.post(
        f"/v1/sessions/{session_id}/complete",
        json={
            "needle_depth_mm": 0.5,
            "areas": ["face"],
            "anesthetic_used": False,
            "bleeding": False,
            "practitioner_id": "pr-1",
        },
    )
    assert done.json()["next_session"] is None
    plan = (await scheduler.http.get(f"/v1/plans/{plan['plan_id']}")).json()
    assert plan["status"] == "completed"
    completed = await scheduler.records(EventKind.SESSION_COMPLETED, expect=1)
    assert json.loads(completed[0].value)["data"]["next_session_earliest"] is None


def next_weekday(weekday: int, hour: int, minute: int = 0, weeks_ahead: int = 1) -> datetime:
    today = datetime.now(ZoneInfo("Europe/Paris")).date()
    days = (weekday - today.weekday()) % 7 + 7 * weeks_ahead
    day = today + timedelta(days=days)
    return datetime.combine(day, time(hour, minute), tzinfo=ZoneInfo("Europe/Paris"))


async def test_reschedule_refuses_closed_hours_and_too_close_spacing(scheduler: Scheduler) -> None:
    await scheduler.passed("c-move")
    plan = await scheduler.plan_of("c-move")
    first = plan["sessions"][0]["session_id"]

    sunday = next_weekday(6, 11)
    closed = await scheduler.http.post(
        f"/v1/sessions/{first}/reschedule", json={"starts_at": sunday.isoformat()}
    )
    assert closed.status_code == 409
    assert closed.json()["reason"] == "outside_opening_hours"
    late = next_weekday(2, 18, 30)
    assert (
        await scheduler.http.post(
            f"/v1/sessions/{first}/reschedule", json={"starts_at": late.isoformat()}
        )
    ).json()["reason"] == "outside_opening_hours"

    wednesday = next_weekday(2, 14)
    moved = await scheduler.http.post(
        f"/v1/sessions/{first}/reschedule", json={"starts_at": wednesday.isoformat()}
    )
    assert moved.status_code == 200, moved.text
    assert local(moved.json()["starts_at"]) == wednesday

    done = await scheduler.http.post(
        f"/v1/sessions/{first}/complete",
        json={
            "needle_depth_mm": 1.5,
            "areas": ["face"],
            "anesthetic_used": True,
            "bleeding": False,
            "practitioner_id": "pr-2",
        },
    )
    second = done.json()["next_session"]["session_id"]
    too_close = next_weekday(2, 14, weeks_ahead=2)
    refused = await scheduler.http.post(
        f"/v1/sessions/{second}/reschedule", json={"starts_at": too_close.isoformat()}
    )
    assert refused.status_code == 409
    assert refused.json()["reason"] == "too_close_to_previous"
    scheduled = await scheduler.records(EventKind.SESSION_SCHEDULED, expect=3)
    assert [json.loads(r.value)["data"]["sequence"] for r in scheduled] == [1, 1, 2]


async def test_cancel_publishes_and_frees_the_room(scheduler: Scheduler) -> None:
    await scheduler.passed("c-cancel")
    plan = await scheduler.plan_of("c-cancel")
    session_id = plan["sessions"][0]["session_id"]
    cancelled = await scheduler.http.post(
        f"/v1/sessions/{session_id}/cancel", json={"reason": "client is travelling"}
    )
    assert cancelled.json()["status"] == "cancelled"
    rooms = scheduler.app.state.context.rooms
    assert await rooms.held_by(uuid.UUID(session_id)) == [], "the room time was given back"
    again = await scheduler.http.post(f"/v1/sessions/{session_id}/cancel", json={"reason": "x"})
    assert (again.status_code, again.json()["reason"]) == (409, "cancelled")
    records = await scheduler.records(EventKind.SESSION_CANCELLED, expect=1)
    data = json.loads(records[0].value)["data"]
    assert (data["session_id"], data["reason"]) == (session_id, "client is travelling")


def overlapping(intervals: list[tuple[datetime, datetime]]) -> bool:
    ordered = sorted(intervals)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(ordered))


async def test_twenty_concurrent_screenings_at_a_one_room_site_never_double_book(
    servers: Servers, scheduler: Scheduler, topics: Topics, db_name: str
) -> None:
    assert (await scheduler.http.put("/v1/sites/tiny-01", json=TINY)).status_code == 201
    async with running(settings_for(servers, topics.prefix, db_name)) as (_, _replica):
        await asyncio.gather(
            *(scheduler.passed(f"c-rush-{i}", site_id="tiny-01") for i in range(20))
        )

        async def all_booked() -> bool:
            return await scheduler.db["plans"].count_documents({"site_id": "tiny-01"}) == 20

        await eventually(all_booked, within=90)
    plans = [p async for p in scheduler.db["plans"].find({"site_id": "tiny-01"})]
    occupied = [
        (s["numbing_starts_at"] or s["starts_at"], s["ends_at"])
        for p in plans
        for s in p["sessions"]
    ]
    assert len(occupied) == 20
    assert {s["room"] for p in plans for s in p["sessions"]} == {1}
    assert not overlapping(occupied)
    records = await scheduler.records(EventKind.SESSION_SCHEDULED, expect=20)
    assert len(records) == 20


async def test_sites_are_published_and_validated(scheduler: Scheduler) -> None:
    updated = await scheduler.http.put("/v1/sites/paris-01", json={**PARIS, "rooms": 4})
    assert updated.status_code == 200
    assert (await scheduler.http.get("/v1/sites/paris-01")).json()["rooms"] == 4
    records = await scheduler.records(EventKind.SITE_UPDATED, expect=2)
    assert [json.loads(r.value)["data"]["rooms"] for r in records] == [3, 4]
    assert all(r.key == b"paris-01" for r in records)
    bad = await scheduler.http.put(
        "/v1/sites/paris-01", json={**PARIS, "timezone": "Europe/Atlantis"}
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "timezone"
    assert (await scheduler.http.get("/v1/sites/nowhere-01")).status_code == 404


async def test_sites_file_is_loaded_and_published_at_start(
    servers: Servers, topics: Topics, db_name: str
) -> None:
    sites_file = REPO / "deploy" / "sites.demo.yaml"
    settings = settings_for(servers, topics.prefix, db_name, sites_file=sites_file)
    async with running(settings) as (_, http):
        assert (await http.get("/v1/sites/nyc-01")).json()["timezone"] == "America/New_York"
        records = await read_topic(
            servers.kafka_bootstrap_servers, topics.name(EventKind.SITE_UPDATED), expect=2
        )
    assert sorted(r.key for r in records) == [b"nyc-01", b"paris-01"]


async def test_a_restart_keeps_site_changes_made_through_the_api(
    servers: Servers, topics: Topics, db_name: str, db: AsyncDatabase[dict[str, Any]]
) -> None:
    sites_file = REPO / "deploy" / "sites.demo.yaml"
    settings = settings_for(servers, topics.prefix, db_name, sites_file=sites_file, lease_seconds=3)
    async with running(settings) as (_, http):
        paris = (await http.get("/v1/sites/paris-01")).json()
        changed = {k: v for k, v in paris.items() if k != "site_id"} | {"rooms": 7}
        assert (await http.put("/v1/sites/paris-01", json=changed)).status_code == 200
    async with running(settings) as (_, http):
        assert (await http.get("/v1/sites/paris-01")).json()["rooms"] == 7
        assert (await http.get("/v1/sites/nyc-01")).status_code == 200
        records = await read_topic(
            servers.kafka_bootstrap_servers, topics.name(EventKind.SITE_UPDATED), expect=3
        )
    # Delivery is at least once: a relay stopped between sending and marking may send again,
    # with the same event id. Count events, not records.
    events = list({json.loads(r.value)["id"]: r for r in records}.values())
    paris_rooms = [json.loads(r.value)["data"]["rooms"] for r in events if r.key == b"paris-01"]
    assert paris_rooms == [paris["rooms"], 7], "the second start published the file's site again"
    assert len(events) == 3


async def test_a_site_that_closes_before_it_opens_is_refused_naming_the_day(
    scheduler: Scheduler,
) -> None:
    hours = {"sat": ["21:52", "21:42"], "sun": ["24:00", "24:00"], "mon": ["09:00", "18:00"]}
    answer = await scheduler.http.put("/v1/sites/paris-01", json={**PARIS, "opening_hours": hours})
    assert answer.status_code == 422, answer.text
    fields = {e["field"] for e in answer.json()["errors"]}
    assert fields == {"opening_hours.sat", "opening_hours.sun"}
    assert (await scheduler.http.get("/v1/sites/paris-01")).json()["opening_hours"] == PARIS[
        "opening_hours"
    ], "a refused change must write nothing"


async def test_a_session_moved_onto_its_own_time_keeps_exactly_its_room_time(
    scheduler: Scheduler,
) -> None:
    await scheduler.passed("c-shift")
    plan = await scheduler.plan_of("c-shift")
    session = plan["sessions"][0]
    wednesday = next_weekday(2, 11)
    path = f"/v1/sessions/{session['session_id']}/reschedule"
    first = await scheduler.http.post(path, json={"starts_at": wednesday.isoformat()})
    assert first.status_code == 200, first.text
    later = wednesday + timedelta(minutes=30)
    moved = await scheduler.http.post(path, json={"starts_at": later.isoformat()})
    assert moved.status_code == 200, moved.text
    rooms = scheduler.app.state.context.rooms
    blocks = await rooms.held_by(uuid.UUID(session["session_id"]))
    assert len(blocks) == 1, "the old time was given back"
    assert blocks[0]["starts_at"] == (later - timedelta(hours=1)).astimezone(UTC), "numbing"
    assert blocks[0]["ends_at"] == (later + timedelta(hours=1)).astimezone(UTC)
    stored = await scheduler.db["plans"].find_one({"_id": plan["plan_id"]})
    assert stored is not None
    assert stored["sessions"][0]["reservation"] == blocks[0]["token"]


async def test_a_move_cut_short_before_the_plan_records_it_keeps_the_old_time(
    scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new time is reserved, then the scheduler dies before the plan records it: the old
    time, which the plan still shows, stays held, so nobody else is booked into it."""
    await scheduler.passed("c-cut")
    plan = await scheduler.plan_of("c-cut")
    session_id = plan["sessions"][0]["session_id"]
    path = f"/v1/sessions/{session_id}/reschedule"
    wednesday = next_weekday(2, 11)
    assert (await scheduler.http.post(path, json={"starts_at": wednesday.isoformat()})).is_success
    rooms = scheduler.app.state.context.rooms
    [booked] = await rooms.held_by(uuid.UUID(session_id))

    def dies(*_: object) -> None:
        raise RuntimeError("the scheduler died here")

    monkeypatch.setattr(Plan, "move", dies)
    later = wednesday + timedelta(minutes=30)  # the same day: the same room-day document
    with pytest.raises(RuntimeError):  # the in-process transport hands the crash over
        await scheduler.http.post(path, json={"starts_at": later.isoformat()})
    held = await rooms.held_by(uuid.UUID(session_id))
    assert booked in held, "the booking the plan still shows lost its room time"
    stored = await scheduler.db["plans"].find_one({"_id": plan["plan_id"]})
    assert stored is not None
    assert stored["sessions"][0]["reservation"] == booked["token"]


async def test_the_reaper_waits_for_a_plan_being_saved(scheduler: Scheduler) -> None:
    """A reservation whose plan is held by a writer (saving it right now) is not reaped from
    under it: the reaper decides under the plan's lease (issue 12)."""
    ctx = scheduler.app.state.context
    site = await ctx.sites.site("paris-01")
    start = datetime(2031, 1, 7, 10, 0, tzinfo=UTC)
    slot = Slot(room=2, starts_at=start, ends_at=start + timedelta(hours=1), numbing_starts_at=None)
    session, plan_id = uuid.uuid4(), uuid.uuid4()
    token = await ctx.rooms.reserve("paris-01", site.timezone, slot, session, plan_id)
    old = datetime.now(UTC) - timedelta(hours=1)
    await ctx.rooms.reservations.update_one({"_id": token}, {"$set": {"created_at": old}})
    saving = await ctx.uow.locks.acquire(f"plans:{plan_id}")
    assert await reap_reservations(ctx) == 0
    assert len(await ctx.rooms.held_by(session)) == 1, "reaped while its plan was being saved"
    await ctx.uow.locks.release(saving)
    assert await reap_reservations(ctx) == 1, "nobody recorded it after all"
    assert await ctx.rooms.held_by(session) == []


async def test_room_time_nobody_recorded_is_given_back(scheduler: Scheduler) -> None:
    """A scheduler that reserved and died before saving its plan: the reaper, which reads only
    the unconfirmed reservations, frees that time and keeps what plans hold."""
    await scheduler.passed("c-kept")
    plan = await scheduler.plan_of("c-kept")
    kept = uuid.UUID(plan["sessions"][0]["session_id"])
    ctx = scheduler.app.state.context
    site = await ctx.sites.site("paris-01")
    start = datetime(2031, 1, 6, 10, 0, tzinfo=UTC)
    slot = Slot(room=3, starts_at=start, ends_at=start + timedelta(hours=1), numbing_starts_at=None)
    orphan = uuid.uuid4()
    token = await ctx.rooms.reserve("paris-01", site.timezone, slot, orphan, uuid.uuid4())
    assert token is not None
    assert await ctx.rooms.reservations.count_documents({}) == 1, "only the orphan is pending"
    old = datetime.now(UTC) - timedelta(hours=1)
    await ctx.rooms.reservations.update_one({"_id": token}, {"$set": {"created_at": old}})
    assert await reap_reservations(ctx) == 1
    assert await ctx.rooms.held_by(orphan) == []
    assert len(await ctx.rooms.held_by(kept)) == 1
    assert await ctx.rooms.reservations.count_documents({}) == 0
