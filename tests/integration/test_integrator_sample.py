"""The Python sample of docs/integrators.md, run exactly as written against the real broker.

Integrators copy it; it must survive what clinicflow really sends: contacts, completed sessions,
a repeated event and the tombstone that follows an erasure (issue 9: it once crashed on that).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from asyncio.subprocess import PIPE, STDOUT
from pathlib import Path

import pytest

from shared.envelope import build, tombstone
from shared.events import ClientContact, EventKind, SessionCompleted
from shared.examples import EXAMPLES
from shared.publisher import KafkaPublisher, send_record
from shared.topics import Topics
from tests.conftest import Servers
from tests.procs import REPO

pytestmark = pytest.mark.integration


def sample_code() -> str:
    page = (REPO / "docs" / "integrators.md").read_text(encoding="utf-8")
    section = page.split("## Subscribing (Python)", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the integrator guide has no Python sample"
    return match.group(1)


async def read_until(process: asyncio.subprocess.Process, wanted: list[str]) -> list[str]:
    """The sample's output lines, until every wanted line came, it exited, or a minute passed."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while not all(w in lines for w in wanted) and time.monotonic() < deadline:
        try:
            raw = await asyncio.wait_for(process.stdout.readline(), deadline - time.monotonic())
        except TimeoutError:
            break
        if not raw:
            break
        lines.append(raw.decode().rstrip("\n"))
    return lines


async def read_available(process: asyncio.subprocess.Process) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    with contextlib.suppress(TimeoutError):
        while raw := await asyncio.wait_for(process.stdout.readline(), 0.5):
            lines.append(raw.decode().rstrip("\n"))
    return lines


async def test_the_sample_follows_contacts_sessions_and_erasure(
    servers: Servers, topics: Topics, publisher: KafkaPublisher, tmp_path: Path
) -> None:
    contact = EXAMPLES[EventKind.CLIENT_CONTACT]
    completed = EXAMPLES[EventKind.SESSION_COMPLETED]
    assert isinstance(contact, ClientContact)
    assert isinstance(completed, SessionCompleted)
    contact_record = build(contact, source="intake", prefix=topics.prefix)
    completed_record = build(completed, source="scheduler", prefix=topics.prefix)
    for record in (contact_record, completed_record, completed_record):  # one delivered twice
        await send_record(publisher, record)
    await send_record(
        publisher, tombstone(EventKind.CLIENT_CONTACT, contact.client_id, prefix=topics.prefix)
    )

    script = tmp_path / "sample.py"
    script.write_text(sample_code())
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": servers.kafka_bootstrap_servers,
        "CLINICFLOW_TOPIC_PREFIX": topics.prefix,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), cwd=REPO, env=env, stdout=PIPE, stderr=STDOUT
    )
    try:
        wanted = [
            f"contact {contact.client_id}",
            f"completed {completed.session_id} next {completed.next_session_earliest}",
            f"erased {contact.client_id}",
        ]
        lines = await read_until(process, wanted)
        await asyncio.sleep(1)  # a repeat of the completed session would print by now
        lines += await read_available(process)
        assert process.returncode is None, "the sample stopped:\n" + "\n".join(lines)
        assert all(w in lines for w in wanted), lines
        assert lines.count(wanted[1]) == 1, "a repeated event was handled twice"
        assert not any("Traceback" in line for line in lines), lines
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), timeout=15)
