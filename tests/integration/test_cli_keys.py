"""`clinicflow keys create|list|revoke` as an operator runs it, against the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clinicflow_cli import keystore
from shared.access import matches, split_token
from shared.topics import Topics
from tests.conftest import Servers

pytestmark = pytest.mark.integration
CLI = Path(sys.executable).with_name("clinicflow")


async def clinicflow(servers: Servers, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": servers.kafka_bootstrap_servers,
        "CLINICFLOW_TOPIC_PREFIX": prefix,
    }
    return await asyncio.to_thread(
        subprocess.run, [str(CLI), *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_create_prints_the_key_once_list_shows_no_secret_and_revoke_revokes(
    servers: Servers, topic_prefix: str
) -> None:
    created = await clinicflow(
        servers, topic_prefix,
        "keys", "create", "--role", "front_desk", "--site", "paris-01", "--site", "nyc-01",
        "--name", "desk", "--expires-in-days", "30",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    parts = split_token(token)
    assert parts is not None, created.stdout
    key_id, secret = parts

    stored = (await keystore.read_all(servers.kafka_bootstrap_servers, Topics(topic_prefix)))[
        key_id
    ]
    assert matches(stored, secret)
    assert secret not in stored.model_dump_json(), "only the hash may be published"

    listed = await clinicflow(servers, topic_prefix, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    keys: list[dict[str, Any]] = json.loads(listed.stdout)
    assert [(k["key_id"], k["role"], k["sites"], k["revoked"]) for k in keys] == [
        (key_id, "front_desk", ["nyc-01", "paris-01"], False)
    ]
    assert secret not in listed.stdout
    table = await clinicflow(servers, topic_prefix, "keys", "list")
    assert key_id in table.stdout
    assert "active" in table.stdout

    revoked = await clinicflow(servers, topic_prefix, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    after = json.loads((await clinicflow(servers, topic_prefix, "keys", "list", "--json")).stdout)
    assert after[0]["revoked"] is True
    unknown = await clinicflow(servers, topic_prefix, "keys", "revoke", "0" * 16)
    assert unknown.returncode == 2
    bad_site = await clinicflow(
        servers, topic_prefix, "keys", "create", "--role", "ops", "--site", "Paris!", "--name", "x"
    )
    assert bad_site.returncode == 2
    assert "Traceback" not in bad_site.stdout + bad_site.stderr
