"""SPEC section 6 through the three real services: tokens, roles, site scope, revocation, OIDC.

The services run in this process against the real Kafka and MongoDB-wire server; keys are
published on the access-keys topic as `clinicflow keys create` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from clinicflow_cli import keystore
from scripts.infra import free_port
from services.intake import api as intake_api
from services.intake.app import create_app as intake_app
from services.intake.settings import IntakeSettings
from services.notifier import api as notifier_api
from services.notifier.app import create_app as notifier_app
from services.notifier.settings import NotifierSettings
from services.scheduler import api as scheduler_api
from services.scheduler import ops_page
from services.scheduler.app import create_app as scheduler_app
from services.scheduler.settings import SchedulerSettings
from shared import ops
from shared.access import ROLE_PERMISSIONS, AccessKey, Permission, Role, new_key
from shared.health import METRICS_ROUTES
from shared.topics import Topics
from tests.access import bearer, issue_key
from tests.conftest import Servers
from tests.procs import REPO
from tests.support import eventually
from tests.support import passing_screening as screening

pytestmark = pytest.mark.integration

SERVICES = ("intake", "scheduler", "notifier")
ROUTES = {
    "intake": {**intake_api.ROUTES, **METRICS_ROUTES, **ops.ROUTES},
    "scheduler": {
        **scheduler_api.ROUTES,
        **METRICS_ROUTES,
        **ops.ROUTES,
        **ops.STALLED_ROUTES,
        **ops_page.ROUTES,
    },
    "notifier": {**notifier_api.ROUTES, **METRICS_ROUTES, **ops.ROUTES},
}
AUDIENCE = "clinicflow-tests"


class Issuer:
    """An OpenID provider on 127.0.0.1: discovery, JWKS, and tokens signed in the test."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}

    def token(
        self, *, key: Any = None, audience: str = AUDIENCE, ttl: int = 300, **claims: Any
    ) -> str:
        now = int(time.time())
        payload = {"iss": self.url, "aud": audience, "sub": "alice", "iat": now, "exp": now + ttl}
        return jwt.encode(
            {**payload, **claims}, key or self.key, algorithm="RS256", headers={"kid": "k1"}
        )

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body: dict[str, Any]
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks"}
                elif self.path == "/jwks":
                    body = issuer.jwks
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield
        finally:
            server.shutdown()
            server.server_close()


@dataclass
class Clinic:
    apps: dict[str, FastAPI]
    clients: dict[str, httpx.AsyncClient]
    keys: dict[tuple[Role, str], str]
    servers: Servers
    prefix: str

    def key(self, role: Role, site: str = "*") -> dict[str, str]:
        return bearer(self.keys[(role, site)])


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    issuer = Issuer()
    with issuer.serving():
        yield issuer


@pytest.fixture
async def clinic(servers: Servers, issuer: Issuer) -> AsyncIterator[Clinic]:
    prefix = f"ac{uuid.uuid4().hex[:8]}."
    keys: dict[tuple[Role, str], str] = {}
    for role in Role:
        for site in ("*", "paris-01", "nyc-01"):
            keys[(role, site)] = await issue_key(
                servers.kafka_bootstrap_servers, prefix, role, [site]
            )
    common: dict[str, Any] = {
        "kafka_bootstrap_servers": servers.kafka_bootstrap_servers,
        "mongodb_uri": servers.mongodb_uri,
        "topic_prefix": prefix,
        "environment": "test",
        "topic_partitions": 3,
        "oidc_issuer": issuer.url,
        "oidc_audience": AUDIENCE,
        "rate_limit": "1000/minute",
    }
    db = f"acc_{uuid.uuid4().hex[:8]}"
    apps = {
        "scheduler": scheduler_app(
            SchedulerSettings(
                **common,
                mongodb_database=f"{db}_s",
                sites_file=REPO / "deploy" / "sites.demo.yaml",
            )
        ),
        "intake": intake_app(IntakeSettings(**common, mongodb_database=f"{db}_i")),
        "notifier": notifier_app(
            NotifierSettings(**common, mongodb_database=f"{db}_n", webhooks_allow_private=True)
        ),
    }
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for name, app in apps.items():
            await stack.enter_async_context(app.state.runtime.lifespan(app))
            clients[name] = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")
            )
        for client in clients.values():

            async def ready(client: httpx.AsyncClient = client) -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, within=60)
        yield Clinic(apps, clients, keys, servers, prefix)


def concrete(path: str) -> str:
    return re.sub(
        r"\{(\w+)\}", lambda m: {"site_id": "paris-01"}.get(m.group(1), str(uuid.uuid4())), path
    )


async def test_anonymous_callers_get_401_on_every_guarded_route(clinic: Clinic) -> None:
    for service, routes in ROUTES.items():
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer cfk_0123456789abcdef_not-a-key"}):
                answer = await clinic.clients[service].request(
                    method, concrete(path), headers=headers, json={}
                )
                assert answer.status_code == 401, (service, method, path, answer.text)
                assert answer.headers["www-authenticate"].startswith("Bearer")
    for service in SERVICES:
        assert (await clinic.clients[service].get("/healthz")).status_code == 200


async def test_every_role_gets_403_on_every_route_outside_its_row(clinic: Clinic) -> None:
    refused = 0
    for service, routes in ROUTES.items():
        for (method, path), permission in routes.items():
            for role in Role:
                if permission in ROLE_PERMISSIONS[role]:
                    continue
                answer = await clinic.clients[service].request(
                    method, concrete(path), headers=clinic.key(role), json={}
                )
                assert answer.status_code == 403, (service, method, path, role, answer.text)
                refused += 1
    assert refused > 40
    integrator_reads = await clinic.clients["intake"].get(
        f"/v1/screenings/{uuid.uuid4()}", headers=clinic.key(Role.INTEGRATOR)
    )
    assert integrator_reads.status_code == 403, "integrators never read screenings"
    assert (
        await clinic.clients["notifier"].get("/metrics", headers=clinic.key(Role.OPS))
    ).status_code == 200


async def booked(clinic: Clinic, site: str) -> tuple[dict[str, Any], dict[str, Any]]:
    answer = await clinic.clients["intake"].post(
        "/v1/screenings", json=screening(site), headers=clinic.key(Role.FRONT_DESK, site)
    )
    assert answer.status_code == 201, answer.text
    screened = answer.json()
    admin = clinic.key(Role.CLINIC_ADMIN)

    async def has_plan() -> bool:
        path = f"/v1/clients/{screened['client_id']}/plan"
        return (await clinic.clients["scheduler"].get(path, headers=admin)).status_code == 200

    await eventually(has_plan, within=60)
    plan = (
        await clinic.clients["scheduler"].get(
            f"/v1/clients/{screened['client_id']}/plan", headers=admin
        )
    ).json()
    return screened, plan


async def test_a_paris_token_sees_and_touches_nothing_of_new_york(clinic: Clinic) -> None:
    nyc, plan = await booked(clinic, "nyc-01")
    session_id = plan["sessions"][0]["session_id"]
    paris_admin = clinic.key(Role.CLINIC_ADMIN, "paris-01")
    intake, scheduler, notifier = (clinic.clients[s] for s in SERVICES)
    hidden = [
        await intake.get(f"/v1/screenings/{nyc['screening_id']}", headers=paris_admin),
        await intake.delete(f"/v1/clients/{nyc['client_id']}", headers=paris_admin),
        await scheduler.get(f"/v1/plans/{plan['plan_id']}", headers=paris_admin),
        await scheduler.get(f"/v1/clients/{nyc['client_id']}/plan", headers=paris_admin),
        await scheduler.get("/v1/sites/nyc-01", headers=paris_admin),
        await scheduler.post(
            f"/v1/sessions/{session_id}/cancel", json={"reason": "x"}, headers=paris_admin
        ),
        await scheduler.post(
            f"/v1/sessions/{session_id}/complete",
            json={
                "needle_depth_mm": 1.0, "areas": ["face"], "anesthetic_used": False,
                "bleeding": False, "practitioner_id": "p",
            },
            headers=paris_admin,
        ),
    ]  # fmt: skip
    assert [a.status_code for a in hidden] == [404] * len(hidden), [a.text for a in hidden]
    assert (
        await scheduler.get(f"/v1/clients/{nyc['client_id']}/sessions", headers=paris_admin)
    ).json() == []
    assert (
        await notifier.get(f"/v1/clients/{nyc['client_id']}/aftercare", headers=paris_admin)
    ).json() == []
    named = [
        await intake.post("/v1/screenings", json=screening("nyc-01"), headers=paris_admin),
        await scheduler.put(
            "/v1/sites/nyc-01",
            json={"name": "x", "timezone": "UTC", "opening_hours": {}, "rooms": 1},
            headers=paris_admin,
        ),
    ]
    assert [a.status_code for a in named] == [403, 403], [a.text for a in named]
    still = await scheduler.get(
        f"/v1/plans/{plan['plan_id']}", headers=clinic.key(Role.CLINIC_ADMIN)
    )
    assert still.json()["sessions"][0]["status"] == "scheduled"

    paris_hook = await notifier.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": [f"{clinic.prefix}session_scheduled"]},
        headers=clinic.key(Role.INTEGRATOR, "paris-01"),
    )  # fmt: skip
    assert paris_hook.status_code == 201, paris_hook.text
    assert paris_hook.json()["sites"] == ["paris-01"]
    hook_id = paris_hook.json()["webhook_id"]
    nyc_integrator = clinic.key(Role.INTEGRATOR, "nyc-01")
    assert (await notifier.get("/v1/webhooks", headers=nyc_integrator)).json() == []
    assert (
        await notifier.delete(f"/v1/webhooks/{hook_id}", headers=nyc_integrator)
    ).status_code == 404
    assert (
        await notifier.get(f"/v1/webhooks/{hook_id}/deliveries", headers=nyc_integrator)
    ).status_code == 404

    await booked(clinic, "nyc-01")
    paris, _ = await booked(clinic, "paris-01")
    deliveries = clinic.apps["notifier"].state.context.store.delivery_store

    async def paris_event_queued() -> bool:
        return bool(await deliveries.find_all({"webhook_id": hook_id}))

    await eventually(paris_event_queued, within=30)
    await asyncio.sleep(1)
    queued = await deliveries.find_all({"webhook_id": hook_id})
    assert {d.client_id for d in queued} == {paris["client_id"]}, "a nyc-01 event reached it"

    owner = clinic.key(Role.INTEGRATOR, "paris-01")
    assert (await notifier.delete(f"/v1/webhooks/{hook_id}", headers=owner)).status_code == 204
    assert (await notifier.delete(f"/v1/webhooks/{hook_id}", headers=owner)).status_code == 404
    assert (await notifier.get("/v1/webhooks", headers=owner)).json() == []
    past = await notifier.get(f"/v1/webhooks/{hook_id}/deliveries", headers=owner)
    assert past.status_code == 200
    assert len(past.json()) == len(queued)


async def test_an_existing_client_cannot_be_taken_over_from_another_site(clinic: Clinic) -> None:
    first = await clinic.clients["intake"].post(
        "/v1/screenings",
        json=screening("paris-01"),
        headers=clinic.key(Role.FRONT_DESK, "paris-01"),
    )
    client_id = first.json()["client_id"]
    takeover = await clinic.clients["intake"].post(
        "/v1/screenings",
        json=screening("nyc-01", client_id=client_id, email="attacker@example.org"),
        headers=clinic.key(Role.FRONT_DESK, "nyc-01"),
    )
    assert takeover.status_code == 404, takeover.text
    stored = await clinic.apps["intake"].state.context.repository.clients.collection.find_one(
        {"_id": client_id}
    )
    assert stored["contact"]["email"] == "ana@example.org"
    assert stored["site_id"] == "paris-01"


async def test_a_revoked_key_is_refused_by_every_service_within_5_seconds(clinic: Clinic) -> None:
    record, token = new_key(name="leaving", role=Role.OPS, sites=["*"], created_by="tests")
    topics = Topics(clinic.prefix)
    await keystore.publish(clinic.servers.kafka_bootstrap_servers, topics, record)

    async def accepted_everywhere() -> bool:
        answers = [await clinic.clients[s].get("/metrics", headers=bearer(token)) for s in SERVICES]
        return all(a.status_code == 200 for a in answers)

    await eventually(accepted_everywhere, within=5)
    revoked = record.model_copy(update={"revoked": True, "revoked_at": datetime.now(UTC)})
    await keystore.publish(clinic.servers.kafka_bootstrap_servers, topics, revoked)

    async def refused_everywhere() -> bool:
        answers = [await clinic.clients[s].get("/metrics", headers=bearer(token)) for s in SERVICES]
        return all(a.status_code == 401 for a in answers)

    await eventually(refused_everywhere, within=5)
    expired = AccessKey.model_validate(
        {**new_key(name="old", role=Role.OPS, sites=["*"], created_by="t")[0].model_dump(),
         "expires_at": datetime.now(UTC) - timedelta(seconds=1)}
    )  # fmt: skip
    assert not expired.active(datetime.now(UTC))


async def test_oidc_tokens_are_checked_against_the_issuers_jwks(
    clinic: Clinic, issuer: Issuer
) -> None:
    admin: dict[str, Any] = {"clinicflow_role": "clinic_admin", "clinicflow_sites": ["paris-01"]}
    scheduler = clinic.clients["scheduler"]
    good = await scheduler.get("/v1/sites/paris-01", headers=bearer(issuer.token(**admin)))
    assert good.status_code == 200, good.text
    outside = await scheduler.get("/v1/sites/nyc-01", headers=bearer(issuer.token(**admin)))
    assert outside.status_code == 404
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "wrong audience": issuer.token(audience="someone-else", **admin),
        "expired": issuer.token(ttl=-60, **admin),
        "signed by another key": issuer.token(key=stranger, **admin),
        "no role": issuer.token(clinicflow_sites=["paris-01"]),
    }
    for why, token in refused.items():
        answer = await scheduler.get("/v1/sites/paris-01", headers=bearer(token))
        assert answer.status_code == 401, (why, answer.text)
    ops = bearer(issuer.token(clinicflow_role="ops", clinicflow_sites="*"))
    assert (await scheduler.get("/v1/sites/paris-01", headers=ops)).status_code == 403


async def test_a_token_over_its_rate_limit_gets_429_with_retry_after(
    servers: Servers, db_name: str, topic_prefix: str
) -> None:
    token = await issue_key(servers.kafka_bootstrap_servers, topic_prefix, Role.CLINIC_ADMIN)
    settings = SchedulerSettings(
        kafka_bootstrap_servers=servers.kafka_bootstrap_servers,
        mongodb_uri=servers.mongodb_uri,
        mongodb_database=db_name,
        topic_prefix=topic_prefix,
        environment="test",
        rate_limit="5/minute",
    )
    app = scheduler_app(settings)
    async with (
        app.state.runtime.lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as http,
    ):

        async def ready() -> bool:
            return (await http.get("/readyz")).status_code == 200

        await eventually(ready, within=60)
        answers = [await http.get("/v1/sites/x-01", headers=bearer(token)) for _ in range(6)]
    assert [a.status_code for a in answers] == [404] * 5 + [429]
    assert int(answers[-1].headers["retry-after"]) >= 1


def test_every_route_of_every_service_is_in_its_access_table() -> None:
    for name, factory in (
        ("intake", intake_app),
        ("scheduler", scheduler_app),
        ("notifier", notifier_app),
    ):
        app = factory()
        schema = app.openapi()
        paths = {
            (method.upper(), path)
            for path, operations in schema["paths"].items()
            for method in operations
            if path.startswith("/v1") or path == "/metrics"
        }
        assert paths == set(ROUTES[name]), name
        assert "bearer" in schema["components"]["securitySchemes"], name
        guarded = schema["paths"]["/metrics"]["get"]
        assert {"bearer": []} in guarded["security"], name
        assert all(perm in Permission for perm in ROUTES[name].values())


async def test_erasure_reaches_intake_scheduler_and_notifier(clinic: Clinic) -> None:
    intake, scheduler, notifier = (clinic.clients[s] for s in SERVICES)
    hook = await notifier.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook",
              "events": [f"{clinic.prefix}session_scheduled", f"{clinic.prefix}session_cancelled"]},
        headers=clinic.key(Role.INTEGRATOR, "paris-01"),
    )  # fmt: skip
    assert hook.status_code == 201, hook.text
    screened, plan = await booked(clinic, "paris-01")
    client_id = screened["client_id"]
    session_id = plan["sessions"][0]["session_id"]
    store = clinic.apps["notifier"].state.context.store
    deliveries = store.deliveries

    async def fanned_out() -> bool:
        return bool(await store.delivery_store.find_all({"client_id": client_id}))

    await eventually(fanned_out, within=30)
    erase = await intake.delete(
        f"/v1/clients/{client_id}", headers=clinic.key(Role.CLINIC_ADMIN, "paris-01")
    )
    assert erase.status_code == 204, erase.text
    admin = clinic.key(Role.CLINIC_ADMIN)
    gone = await intake.get(f"/v1/screenings/{screened['screening_id']}", headers=admin)
    assert gone.status_code == 404

    async def cancelled() -> bool:
        current = (await scheduler.get(f"/v1/plans/{plan['plan_id']}", headers=admin)).json()
        session = current["sessions"][0]
        return bool(
            session["status"] == "cancelled" and session["cancel_reason"] == "client_erased"
        )

    await eventually(cancelled, within=30)
    rooms = clinic.apps["scheduler"].state.context.rooms
    assert await rooms.held_by(uuid.UUID(session_id)) == [], "room kept"

    async def nothing_queued() -> bool:
        return not await deliveries.count_documents({"client_id": client_id, "status": "pending"})

    await eventually(nothing_queued, within=20)
    await asyncio.sleep(2)  # the session_cancelled event has reached the notifier by now
    sent = await store.delivery_store.find_all({"client_id": client_id})
    assert all(d.event_type != f"{clinic.prefix}session_cancelled" for d in sent), (
        "the notifier told an integrator about an erased client"
    )
    assert all(d.status != "pending" for d in sent), "a delivery about them is still queued"


async def test_the_audit_log_records_reads_erasures_completions_sites_and_keys(
    clinic: Clinic,
) -> None:
    intake, scheduler = clinic.clients["intake"], clinic.clients["scheduler"]
    paris_admin = clinic.key(Role.CLINIC_ADMIN, "paris-01")
    screened, plan = await booked(clinic, "paris-01")
    session_id = plan["sessions"][0]["session_id"]
    read = await intake.get(
        f"/v1/screenings/{screened['screening_id']}",
        headers=clinic.key(Role.PRACTITIONER, "paris-01"),
    )
    assert read.status_code == 200
    done = await scheduler.post(
        f"/v1/sessions/{session_id}/complete",
        json={"needle_depth_mm": 1.0, "areas": ["face"], "anesthetic_used": False,
              "bleeding": False, "practitioner_id": "p", "notes": "tolerated well"},
        headers=clinic.key(Role.PRACTITIONER, "paris-01"),
    )  # fmt: skip
    assert done.status_code == 200, done.text
    site = (await scheduler.get("/v1/sites/paris-01", headers=paris_admin)).json()
    changed = {k: v for k, v in site.items() if k != "site_id"} | {"rooms": 5}
    assert (
        await scheduler.put("/v1/sites/paris-01", json=changed, headers=paris_admin)
    ).status_code == 200
    erased = await intake.delete(f"/v1/clients/{screened['client_id']}", headers=paris_admin)
    assert erased.status_code == 204
    record, _ = new_key(name="temp", role=Role.OPS, sites=["paris-01"], created_by="cli:alice")
    topics = Topics(clinic.prefix)
    await keystore.publish(clinic.servers.kafka_bootstrap_servers, topics, record)
    revoked = record.model_copy(
        update={"revoked": True, "revoked_at": datetime.now(UTC), "revoked_by": "cli:bob"}
    )
    await keystore.publish(clinic.servers.kafka_bootstrap_servers, topics, revoked)
    wanted = {
        ("screening_read", screened["screening_id"]),
        ("session_completed", session_id),
        ("site_changed", "paris-01"),
        ("client_erased", screened["client_id"]),
        ("key_created", record.key_id),
        ("key_revoked", record.key_id),
    }

    async def logged() -> bool:
        answer = await intake.get("/v1/audit", params={"site_id": "paris-01"}, headers=paris_admin)
        return wanted <= {(e["action"], e["resource_id"]) for e in answer.json()}

    await eventually(logged, within=30)
    entries = (await intake.get("/v1/audit?site_id=paris-01", headers=paris_admin)).json()
    times = [datetime.fromisoformat(e["at"]) for e in entries]  # "…:30Z" sorts after "…:30.2Z"
    assert times == sorted(times, reverse=True), "newest first"
    by_action = {e["action"]: e for e in entries if (e["action"], e["resource_id"]) in wanted}
    practitioner_key = clinic.keys[(Role.PRACTITIONER, "paris-01")].removeprefix("cfk_")[:16]
    assert by_action["screening_read"]["actor"] == practitioner_key
    assert by_action["key_revoked"]["actor"] == "cli:bob"
    assert "tolerated" not in json.dumps(entries)
    nyc = await intake.get(
        "/v1/audit?site_id=paris-01", headers=clinic.key(Role.CLINIC_ADMIN, "nyc-01")
    )
    assert nyc.status_code == 403
    desk = await intake.get("/v1/audit", headers=clinic.key(Role.FRONT_DESK, "paris-01"))
    assert desk.status_code == 403
    nyc_view = (
        await intake.get("/v1/audit", headers=clinic.key(Role.CLINIC_ADMIN, "nyc-01"))
    ).json()
    assert all("paris-01" not in e["sites"] for e in nyc_view)
