"""The ops page's event stream without a server: a snapshot at once, another on a change, only
the caller's sites, `end` once the key stops being valid, and nothing after the server stops."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from services.scheduler import ops_page
from shared.access import Principal, Role
from shared.envelope import Event, build, parse
from shared.errors import Unauthorized
from shared.events import SiteUpdated
from shared.settings import ServiceSettings


class Keys:
    """`Access.authenticate` for one ops key of paris-01 that the test can revoke."""

    def __init__(self) -> None:
        self.revoked = False

    async def authenticate(self, token: str) -> Principal:
        if self.revoked:
            raise Unauthorized("this API key is revoked or expired")
        return Principal(subject="k", kind="api_key", role=Role.OPS, sites=frozenset({"paris-01"}))


def site_event(site_id: str) -> Event:
    data = SiteUpdated(
        site_id=site_id, name=site_id.upper(), timezone="Europe/Paris",
        opening_hours={"mon": ["09:00", "18:00"]}, rooms=1,
    )  # fmt: skip
    record = build(data, source="tests", prefix="clinic.", time=datetime.now(UTC))
    assert record.value is not None
    return parse(record.value, prefix="clinic.")


async def next_frame(frames: AsyncIterator[str]) -> tuple[str, dict[str, Any]]:
    """The next event of the stream, heartbeats skipped; a stream that sends none fails."""
    async with asyncio.timeout(10):
        async for frame in frames:
            if frame.startswith(":"):
                continue
            name, data = frame.strip().split("\n")
            return name.removeprefix("event: "), json.loads(data.removeprefix("data: "))
    raise AssertionError("the stream ended")


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops_page, "THROTTLE_SECONDS", 0.0)
    monkeypatch.setattr(ops_page, "TICK_SECONDS", 0.01)


async def test_snapshots_follow_changes_and_the_key() -> None:
    page = ops_page.OpsPage(ServiceSettings())
    keys = Keys()
    frames = page.events(keys, "token", lambda: False)
    page.board.apply(site_event("paris-01"))

    name, first = await next_frame(frames)
    assert name == "snapshot"
    assert [s["site_id"] for s in first["sites"]] == ["paris-01"]
    assert page.watchers == 1

    page.board.apply(site_event("nyc-01"))
    page.changes.bump()
    name, second = await next_frame(frames)
    assert name == "snapshot"
    assert [s["site_id"] for s in second["sites"]] == ["paris-01"], "nyc-01 is not the key's"

    keys.revoked = True
    name, end = await next_frame(frames)
    assert (name, end["reason"]) == ("end", "unauthorized")
    with pytest.raises(StopAsyncIteration):
        await anext(frames)
    assert page.watchers == 0


async def test_a_stopping_server_ends_the_stream() -> None:
    page = ops_page.OpsPage(ServiceSettings())
    stopping = False
    frames = page.events(Keys(), "token", lambda: stopping)
    assert (await next_frame(frames))[0] == "snapshot"
    stopping = True
    with pytest.raises(StopAsyncIteration):
        await anext(frames)
