"""The live ops page in headless Chromium (Debian's `chromium`, driven by Playwright): it shows
the demo sites, follows a posted screening without a reload, shows nothing to a caller without
an ops key, shows a dead letter's error, and stops when its key is revoked; its event stream
answers 401 and 403 like every `/v1` route."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from playwright.sync_api import Browser, Page, expect, sync_playwright

from clinicflow_cli import keystore
from shared.access import Role, split_token
from shared.topics import Topics
from tests.access import bearer, issue_key
from tests.conftest import Servers
from tests.procs import Stack, stack
from tests.support import passing_screening

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 30_000
PARIS_CLIENTS = """() => [...document.querySelectorAll('tr[data-site="paris-01"] td[data-stage]')]
    .reduce((sum, td) => sum + Number(td.textContent), 0)"""


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Opened after the async set-up: Playwright's sync API runs an event loop of its own."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail("Debian's chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


def first_event(base: str, token: str | None) -> tuple[int, dict[str, object] | None]:
    """The stream's status and, when it is 200, its first snapshot."""
    headers = bearer(token) if token else {}
    with httpx.stream("GET", f"{base}/v1/ops/stream", headers=headers, timeout=30) as answer:
        if answer.status_code != 200:
            return answer.status_code, None
        assert answer.headers["content-type"].startswith("text/event-stream")
        lines = answer.iter_lines()
        assert next(lines) == "event: snapshot"
        snapshot: dict[str, object] = json.loads(next(lines).removeprefix("data: "))
        return 200, snapshot


def sign_in(page: Page, base: str, key: str) -> None:
    page.goto(f"{base}/ops")
    page.fill("#key", key)
    page.click("button[type=submit]")


def test_the_page_shows_the_sites_and_follows_a_screening_live(
    servers: Servers, topic_prefix: str, db_name: str, tmp_path: Path
) -> None:
    bootstrap = servers.kafka_bootstrap_servers
    ops_key = asyncio.run(issue_key(bootstrap, topic_prefix, Role.OPS))
    desk_key = asyncio.run(issue_key(bootstrap, topic_prefix, Role.FRONT_DESK, ["paris-01"]))
    with stack(servers, topic_prefix, db_name, tmp_path) as running:
        base = running.url("scheduler")
        assert first_event(base, None)[0] == 401
        assert first_event(base, "cfk_0123456789abcdef_not-a-key")[0] == 401
        assert first_event(base, desk_key)[0] == 403
        status, snapshot = first_event(base, ops_key)
        assert status == 200
        assert snapshot is not None
        assert {"sites", "lag", "dead_letters", "errors"} <= set(snapshot)

        with chromium() as browser:
            page = browser.new_page()
            refused_without_data(page, base, desk_key)
            follows_a_screening(page, running, ops_key, desk_key)
            shows_a_dead_letter(page, bootstrap, topic_prefix)
            ends_when_the_key_is_revoked(page, bootstrap, topic_prefix, ops_key)


def refused_without_data(page: Page, base: str, desk_key: str) -> None:
    page.goto(f"{base}/ops")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#board")).to_be_hidden()
    sign_in(page, base, desk_key)
    expect(page.locator("#status")).to_contain_text("403", timeout=WAIT_MS)
    expect(page.locator("#board")).to_be_hidden()
    assert page.locator("tr[data-site]").count() == 0
    expect(page.locator("#login")).to_be_visible()


def follows_a_screening(page: Page, running: Stack, ops_key: str, desk_key: str) -> None:
    base = running.url("scheduler")
    sign_in(page, base, ops_key)
    for site_id in ("paris-01", "nyc-01"):
        expect(page.locator(f'tr[data-site="{site_id}"]')).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#status")).to_have_text("live", timeout=WAIT_MS)
    expect(page.locator("#lag tbody tr").first).to_be_visible(timeout=WAIT_MS)
    before = page.evaluate(PARIS_CLIENTS)
    nyc = page.locator('tr[data-site="nyc-01"]').inner_text()
    page.evaluate("() => { window.notReloaded = true; }")

    answer = httpx.post(
        f"{running.url('intake')}/v1/screenings",
        json=passing_screening("paris-01"),
        headers={**bearer(desk_key), "Idempotency-Key": uuid.uuid4().hex},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text

    page.wait_for_function(f"() => ({PARIS_CLIENTS})() === {before + 1}", timeout=WAIT_MS)
    booked = page.locator('tr[data-site="paris-01"] td[data-stage="booked"]')
    expect(booked).not_to_have_text("0", timeout=WAIT_MS)
    assert page.evaluate("() => window.notReloaded") is True
    assert page.locator('tr[data-site="nyc-01"]').inner_text() == nyc
    assert "Ana" not in page.content()


def in_a_thread(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` in a thread of its own: Playwright's sync API runs an event loop in this one."""
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, work).result()


def shows_a_dead_letter(page: Page, bootstrap: str, prefix: str) -> None:
    async def poison() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(f"{prefix}screening_passed", b"{oops", key=b"c-poison")
        finally:
            await producer.stop()

    in_a_thread(poison())
    # Two groups read screenings and dead-letter it each: the scheduler's and the notifier's
    # (webhooks may carry screenings).
    errors = page.locator("#errors tbody tr", has_text=f"{prefix}screening_passed:")
    expect(errors).to_have_count(2, timeout=WAIT_MS)
    for row in errors.all():
        expect(row).to_contain_text("value is not JSON")
        expect(row).not_to_contain_text("{oops")
    groups = sorted(row.locator("td").nth(2).inner_text() for row in errors.all())
    assert groups == [f"{prefix}notifier", f"{prefix}scheduler"]
    depth = page.locator("#dlq tbody tr", has_text=f"{prefix}screening_passed.dlq").locator("td")
    expect(depth.nth(1)).to_have_text("2", timeout=WAIT_MS)


def ends_when_the_key_is_revoked(page: Page, bootstrap: str, prefix: str, token: str) -> None:
    parts = split_token(token)
    assert parts is not None

    async def revoke() -> None:
        topics = Topics(prefix)
        record = (await keystore.read_all(bootstrap, topics))[parts[0]]
        revoked = {"revoked": True, "revoked_at": datetime.now(UTC), "revoked_by": "tests"}
        await keystore.publish(bootstrap, topics, record.model_copy(update=revoked))

    in_a_thread(revoke())
    expect(page.locator("#status")).to_contain_text("no longer valid", timeout=WAIT_MS)
    expect(page.locator("#board")).to_be_hidden()
    expect(page.locator("#login")).to_be_visible()
