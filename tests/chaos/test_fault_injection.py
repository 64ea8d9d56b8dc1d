"""Fault injection against the whole local stack (`make chaos`; also part of `make test`).

`make up`'s own supervisor runs the three services on a private Kafka and FerretDB. Hundreds of
client workflows run through it: screenings at both demo sites, then completions dated in the
past, so that every aftercare step falls due during the run. Aftercare goes out by log, by
email to an SMTP receiver, and to a webhook receiver that is slow and sometimes fails. Faults
are injected meanwhile:
- a random service is SIGKILLed every few seconds, and the supervisor restarts it;
- Kafka is restarted once, and FerretDB once;
- one service is SIGSTOPped for longer than its lease, then continued;
- 100 poison records go to each input topic: bad JSON, wrong schema, oversized, no envelope.

Then the invariants are checked and printed as a table, and each must show zero violations.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiosmtpd.controller import Controller
from pymongo import AsyncMongoClient

from scripts import infra
from scripts.infra import free_port
from shared.envelope import build
from shared.events import EventKind
from shared.examples import EXAMPLES
from shared.topics import DLQ_SUFFIX, Topics
from tests.procs import REPO
from tests.receiver import Receiver, webhook_receiver
from tests.support import NO_CONTRAINDICATION

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1200)]

WORKFLOWS = 300
SERVICES = ("intake", "scheduler", "notifier")
LEASE_SECONDS = 4
KILL_EVERY_S = 4.0
POISON_PER_TOPIC = 100
OVERSIZED_PER_TOPIC = 10
POISONED = (
    EventKind.SCREENING_PASSED,
    EventKind.CLIENT_CONTACT,
    EventKind.SITE_UPDATED,
    EventKind.SESSION_SCHEDULED,
    EventKind.SESSION_COMPLETED,
    EventKind.SESSION_CANCELLED,
    EventKind.AFTERCARE_DUE,
)
"""Every topic a service reads: through a consumer group or into a view."""
SETTLE_S = 420.0
SECRET = "whsec_Y2hhb3Mtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OQ=="


# -- the receivers ---------------------------------------------------------------------------


class Mailbox:
    """An SMTP server (aiosmtpd's hook names) that keeps the Message-ID of every email."""

    def __init__(self) -> None:
        self.message_ids: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.message_ids.append(str(parsed["Message-ID"]))
        return "250 Message accepted"


# -- the stack ---------------------------------------------------------------------------------


@dataclass
class Stack:
    inst: infra.Instance
    ports: dict[str, int]
    log: Path
    keys: dict[str, str] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def pid(self, service: str) -> int | None:
        return infra.running_pid(self.inst.pidfile(service))

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[f'CLINICFLOW_KEY_{role.upper()}']}"}


@contextlib.asynccontextmanager
async def stack_up(tmp_path: Path, smtp_port: int) -> AsyncIterator[Stack]:
    """`python -m scripts.stack up` on private ports, with short leases and quick retries."""
    ports = dict(zip(SERVICES, (free_port() for _ in SERVICES), strict=True))
    name = f"chaos-{os.getpid()}"
    env = {
        **os.environ,
        "CLINICFLOW_INFRA_NAME": name,
        "CLINICFLOW_KAFKA_PORT": str(free_port()),
        "CLINICFLOW_CONTROLLER_PORT": str(free_port()),
        "CLINICFLOW_MONGO_PORT": str(free_port()),
        "CLINICFLOW_STACK_PORTS": ",".join(str(ports[s]) for s in SERVICES),
        "CLINICFLOW_LEASE_SECONDS": str(LEASE_SECONDS),
        "CLINICFLOW_RATE_LIMIT": "1000000/minute",
        "CLINICFLOW_SMTP_HOST": "127.0.0.1",
        "CLINICFLOW_SMTP_PORT": str(smtp_port),
        "CLINICFLOW_TIMER_INTERVAL_SECONDS": "0.5",
        "CLINICFLOW_DELIVERY_BACKOFF_SECONDS": "0.5",
        "CLINICFLOW_DELIVERY_MAX_ATTEMPTS": "12",
        # Webhooks as the clients' channels: 0.5 s doubling, 12 attempts (a day is too long here).
        "CLINICFLOW_WEBHOOK_RETRY_DELAYS_SECONDS": json.dumps([0.5 * 2**n for n in range(11)]),
    }
    for variable in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URI"):
        env.pop(variable, None)
    inst = infra.Instance(
        name,
        int(env["CLINICFLOW_KAFKA_PORT"]),
        int(env["CLINICFLOW_CONTROLLER_PORT"]),
        int(env["CLINICFLOW_MONGO_PORT"]),
    )
    log = tmp_path / "stack.log"
    with log.open("wb") as output:
        up = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "scripts.stack", "up",
            cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    stack = Stack(inst, ports, log)
    try:
        deadline = time.monotonic() + 300
        while len(stack.keys) < 5:
            assert up.returncode is None, f"make up stopped:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the stack did not come up"
            await asyncio.sleep(0.5)
            stack.keys = dict(
                line.removeprefix("  export ").split("=", 1)
                for line in log.read_text().splitlines()
                if line.startswith("  export CLINICFLOW_KEY_")
            )
        yield stack
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(up.wait(), timeout=120)
        except TimeoutError:
            up.kill()
        infra.down(inst, purge=True)


# -- the workload ------------------------------------------------------------------------------


@dataclass
class Client:
    client_id: str
    site_id: str
    passed: bool
    screening_id: str = ""
    completed: bool = False


async def persist(
    call: Callable[[], Awaitable[httpx.Response]], done: Callable[[httpx.Response], bool]
) -> httpx.Response:
    """Repeat an idempotent request through restarts until it gets a final answer."""
    for _ in range(600):
        with contextlib.suppress(httpx.HTTPError):
            answer = await call()
            if done(answer):
                return answer
        await asyncio.sleep(0.5)
    raise AssertionError("no final answer after 5 minutes of retries")


def screening(n: int, rng: random.Random) -> tuple[str, dict[str, Any], bool]:
    site = ("paris-01", "nyc-01")[n % 2]
    passes = n % 10 != 0
    health = dict(NO_CONTRAINDICATION) | ({} if passes else {"pregnant": True})
    severity = ("mild", "moderate", "severe")[n % 3]
    client_id = f"chaos-{n:04d}-{uuid.uuid4().hex[:6]}"
    body = {
        "site_id": site,
        "client": {
            "client_id": client_id,
            "full_name": f"Chaos Client {n}",
            "email": f"client{n}@example.org",
            "locale": rng.choice(["en", "fr"]),
        },
        "treatment": {"areas": ["face"], "concerns": ["acne_scars"], "severity": severity},
        "skin": {"sensitivity": "normal"},
        "health": health,
        "consent": {"treatment": True, "data_processing": True},
    }
    return client_id, body, passes


async def run_workflow(stack: Stack, http: httpx.AsyncClient, n: int, rng: random.Random) -> Client:
    """Screen one client; when they pass, wait for their plan and complete session 1 in the
    past, so that its whole aftercare timeline falls due now."""
    client_id, body, passes = screening(n, rng)
    key = {"Idempotency-Key": f"chaos-{client_id}"} | stack.headers("front_desk")
    answer = await persist(
        lambda: http.post(f"{stack.url('intake')}/v1/screenings", json=body, headers=key),
        lambda a: a.status_code in (200, 201),
    )
    screened = answer.json()
    assert (screened["outcome"] == "passed") is passes, screened
    client = Client(client_id, body["site_id"], passes, screened["screening_id"])
    if not passes:
        return client
    staff = stack.headers("practitioner")
    plan = await persist(
        lambda: http.get(f"{stack.url('scheduler')}/v1/clients/{client_id}/plan", headers=staff),
        lambda a: a.status_code == 200 and bool(a.json()["sessions"]),
    )
    first = plan.json()["sessions"][0]
    past = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    completion = {
        "needle_depth_mm": 0.5,
        "areas": ["face"],
        "anesthetic_used": False,
        "bleeding": False,
        "practitioner_id": "pr-chaos",
        "completed_at": (past - timedelta(days=20)).isoformat(),
    }
    path = f"{stack.url('scheduler')}/v1/sessions/{first['session_id']}/complete"
    await persist(
        lambda: http.post(path, json=completion, headers=staff),
        lambda a: a.status_code in (200, 409),
    )
    client.completed = True
    return client


# -- the faults --------------------------------------------------------------------------------


@dataclass
class Faults:
    kills: Counter[str] = field(default_factory=Counter)
    restarts: list[str] = field(default_factory=list)
    paused: str = ""
    poison: dict[str, list[tuple[int, int]]] = field(default_factory=dict)


def poison_values(topic: str, rng: random.Random) -> list[tuple[str, bytes, list[Any]]]:
    """100 records no reader can use: bad JSON, wrong schema, oversized, no envelope."""
    kind = Topics("clinic.").kind(topic)
    valid = json.loads(build(EXAMPLES[kind], source="chaos", prefix="clinic.").value or b"{}")
    wrong = {**valid, "data": {"unexpected": True}}
    bare = {k: v for k, v in valid.items() if k not in ("id", "type", "specversion")}
    oversized: tuple[bytes, list[Any]] = (b"x" * 1_040_000, [])
    kinds = [
        (b"{this is not json", [("content-type", b"application/cloudevents+json")]),
        (json.dumps({**wrong, "id": str(uuid.uuid4())}).encode(), []),
        (json.dumps(bare).encode(), []),
    ]
    out = []
    for n in range(POISON_PER_TOPIC):
        value, headers = oversized if n < OVERSIZED_PER_TOPIC else kinds[n % len(kinds)]
        out.append((f"poison-{rng.randrange(10**9)}", value, headers))
    return out


async def inject_poison(stack: Stack, faults: Faults, rng: random.Random) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.inst.bootstrap_servers, max_request_size=2_000_000
    )
    await producer.start()
    try:
        for kind in POISONED:
            topic = f"clinic.{kind.value}"
            sent = []
            for key, value, headers in poison_values(topic, rng):
                meta = await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)
                sent.append((meta.partition, meta.offset))
            faults.poison[topic] = sent
    finally:
        await producer.stop()


async def restart(stack: Stack, component: str, faults: Faults) -> None:
    """Stop Kafka or FerretDB (SIGTERM) and start it again on the same data."""
    pid = infra.running_pid(stack.inst.pidfile(component))
    assert pid is not None
    await asyncio.to_thread(infra.stop_pid, pid)
    start = infra.start_kafka if component == "kafka" else infra.start_ferretdb
    await asyncio.to_thread(start, stack.inst)
    await asyncio.to_thread(infra.wait_ready, stack.inst)
    faults.restarts.append(component)


async def inject_faults(
    stack: Stack, faults: Faults, rng: random.Random, until: asyncio.Event
) -> None:
    """Kills every few seconds until `until`; Kafka, FerretDB and a pause once each."""
    start = time.monotonic()
    plan: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
        "poison": lambda: inject_poison(stack, faults, rng),
        "kafka": lambda: restart(stack, "kafka", faults),
        "pause": lambda: pause(stack, faults, rng),
        "ferretdb": lambda: restart(stack, "ferretdb", faults),
    }
    schedule = iter([(3.0, "poison"), (15.0, "kafka"), (30.0, "pause"), (50.0, "ferretdb")])
    upcoming = next(schedule, None)
    background: list[asyncio.Task[None]] = []
    while not until.is_set() or upcoming is not None:
        elapsed = time.monotonic() - start
        if upcoming is not None and elapsed >= upcoming[0]:
            background.append(asyncio.create_task(plan[upcoming[1]]()))
            upcoming = next(schedule, None)
        victim = rng.choice([s for s in SERVICES if s != faults.paused])
        pid = stack.pid(victim)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                faults.kills[victim] += 1
        await asyncio.sleep(KILL_EVERY_S)
    await asyncio.gather(*background)


async def pause(stack: Stack, faults: Faults, rng: random.Random) -> None:
    """SIGSTOP one service for longer than its leases last, then let it go on."""
    victim = rng.choice(SERVICES)
    faults.paused = victim  # spared by the kills from now on
    for _ in range(120):  # it may be restarting after a kill
        if (pid := stack.pid(victim)) is not None:
            break
        await asyncio.sleep(0.5)
    assert pid is not None, f"{victim} did not come back to be paused"
    os.kill(pid, signal.SIGSTOP)
    await asyncio.sleep(LEASE_SECONDS * 2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
    faults.paused = ""


# -- the checks --------------------------------------------------------------------------------


def overlaps(blocks: list[dict[str, Any]]) -> int:
    count = 0
    by_room: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for block in blocks:
        by_room[block["room"]].append(block)
    for held in by_room.values():
        ordered = sorted(held, key=lambda b: b["starts_at"])
        count += sum(b["starts_at"] < a["ends_at"] for a, b in itertools.pairwise(ordered))
    return count


async def consumer_lag(bootstrap: str) -> dict[str, int]:
    """Per consumer group, how many records of its topics it has not committed yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await reader.start()
    try:
        lags: dict[str, int] = {}
        for group, *_ in await admin.list_consumer_groups():
            committed = await admin.list_consumer_group_offsets(group)
            ends = await reader.end_offsets(list(committed))
            lags[group] = sum(ends[tp] - meta.offset for tp, meta in committed.items())
        return lags
    finally:
        await reader.stop()
        await admin.close()


async def dead_lettered(bootstrap: str, topics: list[str]) -> set[tuple[str, int, int]]:
    """(topic, partition, offset) of every record copied to a DLQ with an error."""
    found: set[tuple[str, int, int]] = set()
    for topic in topics:
        reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await reader.start()
        try:
            await reader._client.force_metadata_update()
            partitions = reader.partitions_for_topic(topic + DLQ_SUFFIX) or set()
            tps = [TopicPartition(topic + DLQ_SUFFIX, p) for p in sorted(partitions)]
            if not tps:
                continue
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            ends = await reader.end_offsets(tps)
            while [tp for tp in tps if await reader.position(tp) < ends[tp]]:
                batch = await reader.getmany(*tps, timeout_ms=1000)
                for records in batch.values():
                    for record in records:
                        headers = dict(record.headers)
                        if headers.get("dlq-error"):
                            found.add((
                                headers["dlq-original-topic"].decode(),
                                int(headers["dlq-original-partition"]),
                                int(headers["dlq-original-offset"]),
                            ))  # fmt: skip
        finally:
            await reader.stop()
    return found


@dataclass
class Check:
    what: str
    checked: int
    violations: int
    detail: str = ""


async def invariants(
    stack: Stack,
    clients: list[Client],
    faults: Faults,
    mailbox: Mailbox,
    hook: Receiver,
) -> list[Check]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        stack.inst.mongodb_uri, tz_aware=True
    )
    try:
        scheduler, notifier = mongo["clinicflow_scheduler"], mongo["clinicflow_notifier"]
        checks = []

        passed = [c for c in clients if c.passed]
        plans: Counter[str] = Counter()
        for name in ("plans", "plans_history"):
            async for plan in scheduler[name].find({}, {"screening_id": 1}):
                plans[str(plan["screening_id"])] += 1
        wrong = [c for c in passed if plans[c.screening_id] != 1]
        checks.append(Check("every passed screening has exactly one plan", len(passed),
                            len(wrong), ", ".join(c.client_id for c in wrong[:5])))  # fmt: skip

        days = await scheduler["room_days"].find({}).to_list()
        double = sum(overlaps(day["blocks"]) for day in days)
        checks.append(Check("no room holds two sessions at once", len(days), double))

        steps = [
            s
            for name in ("aftercare_steps", "aftercare_steps_history")
            async for s in notifier[name].find({"due_at": {"$lte": datetime.now(UTC)}})
            if s["status"] != "cancelled"
        ]
        undelivered = [s for s in steps if s["status"] != "delivered"]
        checks.append(Check("every due aftercare step was delivered (none skipped or failed)",
                            len(steps), len(undelivered),
                            str(Counter(s["status"] for s in undelivered))))  # fmt: skip
        mailed = {m.removeprefix("<aftercare-").split("@", 1)[0] for m in mailbox.message_ids}
        missing_mail = [s for s in steps if s["_id"] not in mailed]
        checks.append(Check("every due step reached the email receiver", len(steps),
                            len(missing_mail)))  # fmt: skip
        events: dict[str, set[str]] = defaultdict(set)
        for hit in hook.received:
            events[hit.event["data"]["aftercare_id"]].add(hit.event["id"])
        twice = [i for i, ids in events.items() if len(ids) > 1]
        missing_hook = [s["_id"] for s in steps if s["_id"] not in events]
        odd = []
        for step_id in (twice + missing_hook)[:3]:
            posts = [
                (d["_id"], d["status"], [a.get("error") for a in d.get("attempts", [])][-3:])
                for name in ("deliveries", "deliveries_history")
                async for d in notifier[name].find({"aftercare_id": step_id, "kind": "webhook"})
            ]
            odd.append(f"{step_id}: ids {sorted(events.get(step_id, ()))} deliveries {posts}")
        checks.append(Check("every due step reached the webhook, under one event id",
                            len(steps), len(missing_hook) + len(twice),
                            f"missing {len(missing_hook)}, two ids {len(twice)}; "
                            + " / ".join(odd)))  # fmt: skip
        log_deliveries = {
            d["aftercare_id"]
            for name in ("deliveries", "deliveries_history")
            async for d in notifier[name].find({"channel": "log", "status": "delivered"})
        }
        checks.append(Check("every due step was logged once (log channel)", len(steps),
                            sum(s["_id"] not in log_deliveries for s in steps)))  # fmt: skip

        poison = {(t, p, o) for t, sent in faults.poison.items() for p, o in sent}
        found = await dead_lettered(stack.inst.bootstrap_servers, list(faults.poison))
        checks.append(Check("every poison record is in its .dlq with its error", len(poison),
                            len(poison - found)))  # fmt: skip

        lags = await consumer_lag(stack.inst.bootstrap_servers)
        checks.append(Check("every consumer group's lag is back to 0", len(lags),
                            sum(1 for lag in lags.values() if lag),
                            str({g: lag for g, lag in lags.items() if lag})))  # fmt: skip

        pending = {
            db: await mongo[f"clinicflow_{db}"]["locks"].count_documents({}) for db in SERVICES
        }
        stuck = {
            db: await mongo[f"clinicflow_{db}"]["outbox_dead_letters"].count_documents({})
            for db in SERVICES
        }
        checks.append(Check("nothing is left pending in any outbox", len(SERVICES),
                            sum(pending.values()) + sum(stuck.values()),
                            f"leases {pending}, refused {stuck}"))  # fmt: skip
        return checks
    finally:
        await mongo.close()


async def settled(stack: Stack, clients: list[Client]) -> bool:
    """Every step due is delivered on every channel, nothing waits for another attempt, and
    every consumer group has caught up."""
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        stack.inst.mongodb_uri, tz_aware=True
    )
    try:
        notifier = mongo["clinicflow_notifier"]
        due = {"due_at": {"$lte": datetime.now(UTC)}, "status": {"$in": ["scheduled", "due"]}}
        if await notifier["aftercare_steps"].count_documents(due):
            return False
        if await notifier["deliveries"].count_documents({"status": "pending"}):
            return False
        expected = 5 * sum(c.completed for c in clients)
        if await notifier["aftercare_steps_history"].count_documents({}) < expected:
            return False
    finally:
        await mongo.close()
    lags = await consumer_lag(stack.inst.bootstrap_servers)
    return not any(lags.values())


def table(checks: list[Check], faults: Faults, clients: list[Client], seconds: float) -> str:
    lines = [
        f"fault injection: {len(clients)} workflows in {seconds:.0f}s; "
        f"killed {dict(faults.kills)}; restarted {faults.restarts}; poison "
        f"{sum(len(v) for v in faults.poison.values())} records",
        "| invariant | checked | violations |",
        "|---|---|---|",
    ]
    for check in checks:
        extra = f" ({check.detail})" if check.violations and check.detail else ""
        lines.append(f"| {check.what} | {check.checked} | {check.violations}{extra} |")
    return "\n".join(lines)


async def test_the_stack_loses_nothing_and_repeats_nothing_under_faults(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CLINICFLOW_CHAOS_SEED", "12")))
    mailbox = Mailbox()
    smtp_port = free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    began = time.monotonic()
    try:
        async with (
            stack_up(tmp_path, smtp_port) as stack,
            webhook_receiver() as hook,
            httpx.AsyncClient(timeout=10) as http,
        ):
            hook.slow, hook.fail_ratio = 0.3, 0.1
            subscription = {"url": hook.url, "events": ["clinic.aftercare_due"], "secret": SECRET}
            await persist(
                lambda: http.post(f"{stack.url('notifier')}/v1/webhooks", json=subscription,
                                  headers=stack.headers("integrator")),
                lambda a: a.status_code == 201,
            )  # fmt: skip
            faults = Faults()
            done = asyncio.Event()
            injecting = asyncio.create_task(inject_faults(stack, faults, rng, done))
            gate = asyncio.Semaphore(12)

            async def one(n: int) -> Client:
                async with gate:
                    return await run_workflow(stack, http, n, rng)

            try:
                clients = await asyncio.gather(*(one(n) for n in range(WORKFLOWS)))
            finally:
                done.set()
                await injecting
            deadline = time.monotonic() + SETTLE_S
            while not await settled(stack, clients):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(2)
            checks = await invariants(stack, clients, faults, mailbox, hook)
    finally:
        smtp.stop()
    report = table(checks, faults, clients, time.monotonic() - began)
    print("\n" + report)
    (infra.cache_dir() / "chaos-last-run.md").write_text(report + "\n")
    assert sum(faults.kills.values()) >= 10
    assert faults.restarts == ["kafka", "ferretdb"]
    assert all(check.violations == 0 for check in checks), report
