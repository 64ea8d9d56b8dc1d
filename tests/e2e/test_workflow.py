"""The whole workflow across intake, scheduler and notifier running as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Servers
from tests.procs import Stack, service_process, stack, wait_for
from tests.receiver import Receiver, webhook_receiver
from tests.support import eventually, passing_screening

pytestmark = pytest.mark.integration
SECRET = "whsec_ZTJlLWludGVncmF0b3Itc2VjcmV0LTAwMDEtMzItYg=="
EARLY_STEPS = {"immediate", "day_1", "day_3", "day_7", "day_15"}


@contextlib.asynccontextmanager
async def subscribed(current: Stack, topic_prefix: str) -> AsyncIterator[Receiver]:
    async with webhook_receiver() as receiver, httpx.AsyncClient(auth=current.auth) as http:
        response = await http.post(
            f"{current.url('notifier')}/v1/webhooks",
            json={
                "url": receiver.url,
                "events": [f"{topic_prefix}aftercare_due"],
                "secret": SECRET,
            },
        )
        assert response.status_code == 201, response.text
        yield receiver


async def screen_and_book(http: httpx.AsyncClient, current: Stack) -> tuple[str, dict[str, Any]]:
    screening = await http.post(
        f"{current.url('intake')}/v1/screenings",
        json=passing_screening(),
    )
    assert screening.status_code == 201, screening.text
    assert screening.json()["outcome"] == "passed"
    client_id: str = screening.json()["client_id"]

    async def booked() -> bool:
        answer = await http.get(f"{current.url('scheduler')}/v1/clients/{client_id}/plan")
        return answer.status_code == 200

    await eventually(booked, within=60)
    plan: dict[str, Any] = (
        await http.get(f"{current.url('scheduler')}/v1/clients/{client_id}/plan")
    ).json()
    return client_id, plan


def completion(completed_at: datetime | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "needle_depth_mm": 1.5,
        "areas": ["face"],
        "anesthetic_used": True,
        "bleeding": True,
        "practitioner_id": "pr-e2e",
    }
    if completed_at is not None:
        body["completed_at"] = completed_at.isoformat()
    return body


async def test_a_client_walks_from_screening_to_aftercare_and_the_next_booking(
    servers: Servers, topic_prefix: str, db_name: str, tmp_path: Path
) -> None:
    with stack(servers, topic_prefix, db_name, tmp_path) as current:
        async with (
            subscribed(current, topic_prefix) as receiver,
            httpx.AsyncClient(auth=current.auth) as http,
        ):
            client_id, plan = await screen_and_book(http, current)
            first = plan["sessions"][0]
            assert first["status"] == "scheduled"
            starts = datetime.fromisoformat(first["starts_at"])
            assert starts - datetime.now(UTC) >= timedelta(hours=23, minutes=59)

            done = await http.post(
                f"{current.url('scheduler')}/v1/sessions/{first['session_id']}/complete",
                json=completion(),
            )
            assert done.status_code == 200, done.text
            following = done.json()["next_session"]
            assert following["sequence"] == 2

            async def immediate_delivered() -> bool:
                return any(r.event["data"]["step"] == "immediate" for r in receiver.received)

            await eventually(immediate_delivered, within=60)
            hit = next(r for r in receiver.received if r.event["data"]["step"] == "immediate")
            assert hit.verified(SECRET)["id"] == hit.headers["webhook-id"]
            assert hit.event["subject"] == client_id
            assert hit.event["data"]["locale"] == "fr"
            correlation = hit.event["correlationid"]

            async def timeline_complete() -> bool:
                steps = (
                    await http.get(f"{current.url('notifier')}/v1/clients/{client_id}/aftercare")
                ).json()
                return {s["step"] for s in steps} >= {
                    "immediate", "day_1", "day_3", "day_7", "day_15", "next_session",
                }  # fmt: skip

            await eventually(timeline_complete, within=60)
            steps = {
                s["step"]: s
                for s in (
                    await http.get(f"{current.url('notifier')}/v1/clients/{client_id}/aftercare")
                ).json()
            }
            completed_at = datetime.fromisoformat(done.json()["session"]["completed_at"])
            for step, days in (("day_1", 1), ("day_3", 3), ("day_7", 7), ("day_15", 15)):
                due = datetime.fromisoformat(steps[step]["due_at"])
                assert timedelta(days=days) <= due - completed_at < timedelta(days=days, hours=12)
                assert steps[step]["status"] == "scheduled"
            reminder = datetime.fromisoformat(steps["next_session"]["due_at"])
            second_starts = datetime.fromisoformat(following["starts_at"])
            assert timedelta(days=1, hours=12) < second_starts - reminder <= timedelta(days=2)
            sessions = (
                await http.get(f"{current.url('scheduler')}/v1/clients/{client_id}/sessions")
            ).json()
            assert [s["status"] for s in sessions] == ["completed", "scheduled"]
            assert correlation, "the aftercare event carries the workflow's correlation id"


async def test_a_notifier_killed_while_steps_are_due_delivers_each_exactly_once(
    servers: Servers, topic_prefix: str, db_name: str, tmp_path: Path
) -> None:
    with stack(servers, topic_prefix, db_name, tmp_path) as current:
        async with (
            subscribed(current, topic_prefix) as receiver,
            httpx.AsyncClient(auth=current.auth) as http,
        ):
            client_id, plan = await screen_and_book(http, current)
            session_id = plan["sessions"][0]["session_id"]
            weeks_ago = datetime.now(UTC) - timedelta(days=20)
            done = await http.post(
                f"{current.url('scheduler')}/v1/sessions/{session_id}/complete",
                json=completion(weeks_ago),
            )
            assert done.status_code == 200, done.text

            async def steps_stored() -> bool:
                steps = (
                    await http.get(f"{current.url('notifier')}/v1/clients/{client_id}/aftercare")
                ).json()
                return len(steps) >= 5

            await eventually(steps_stored, within=60)
            notifier = current.processes["notifier"]
            os.kill(notifier.pid, signal.SIGKILL)
            notifier.wait()
            delivered_before_kill = len(receiver.received)

            with service_process(
                "notifier",
                current.ports["notifier"],
                {**current.env, "MONGODB_DATABASE": f"{db_name}_notifier"},
                tmp_path / "notifier-restarted.log",
            ):
                wait_for(f"{current.url('notifier')}/readyz", 200, timeout=90)

                async def all_delivered() -> bool:
                    steps = (
                        await http.get(
                            f"{current.url('notifier')}/v1/clients/{client_id}/aftercare"
                        )
                    ).json()
                    due = [
                        s
                        for s in steps
                        if s["step"] in {"immediate", "day_1", "day_3", "day_7", "day_15"}
                    ]
                    return len(due) == 5 and all(s["status"] == "delivered" for s in due)

                await eventually(all_delivered, within=90)
                await asyncio.sleep(2)
    per_step: dict[str, set[str]] = {}
    for hit in receiver.received:
        per_step.setdefault(hit.event["data"]["step"], set()).add(hit.event["id"])
    assert set(per_step) == EARLY_STEPS, f"{delivered_before_kill} delivered before the kill"
    assert all(len(ids) == 1 for ids in per_step.values()), per_step
    # A POST that completed in the instant before SIGKILL, unrecorded, is sent again with the
    # same CloudEvent id (docs/integrators.md: receivers drop repeated ids); without that race
    # every step arrives exactly once.
    repeats = len(receiver.received) - len(per_step)
    assert repeats <= 1, f"{repeats} repeated POSTs"
