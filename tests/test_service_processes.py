"""Each service starts as a process and reports its health, readiness and metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from scripts.infra import free_port
from shared.access import Role
from tests.access import bearer, issue_key
from tests.conftest import Servers
from tests.procs import service_process, wait_for


@pytest.mark.parametrize("name", ["intake", "scheduler", "notifier"])
def test_service_is_ready_once_kafka_and_mongodb_answer(
    name: str, servers: Servers, topic_prefix: str, db_name: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": servers.kafka_bootstrap_servers,
        "MONGODB_URI": servers.mongodb_uri,
        "MONGODB_DATABASE": db_name,
        "CLINICFLOW_TOPIC_PREFIX": topic_prefix,
        "CLINICFLOW_ENVIRONMENT": "test",
    }
    ops = asyncio.run(issue_key(servers.kafka_bootstrap_servers, topic_prefix, Role.OPS))
    with service_process(name, port, env, tmp_path / f"{name}.log") as proc:
        base = f"http://127.0.0.1:{port}"
        ready = wait_for(f"{base}/readyz", 200)
        checks = ready.json()["checks"]
        assert {"kafka", "mongodb", "started"} <= set(checks)
        assert all(checks.values())
        assert httpx.get(f"{base}/healthz").json()["service"] == name
        anonymous = httpx.get(f"{base}/metrics")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        metrics = httpx.get(f"{base}/metrics", headers=bearer(ops))
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "python_info" in metrics.text
        channels = httpx.get(f"{base}/asyncapi.json").json()["channels"]
        assert f"{topic_prefix}aftercare_due" in channels
        assert proc.poll() is None


def test_readyz_is_503_while_kafka_is_unreachable(
    servers: Servers, db_name: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "MONGODB_URI": servers.mongodb_uri,
        "MONGODB_DATABASE": db_name,
        "CLINICFLOW_ENVIRONMENT": "test",
    }
    with service_process("scheduler", port, env, tmp_path / "scheduler.log"):
        base = f"http://127.0.0.1:{port}"
        alive = wait_for(f"{base}/healthz", 200)
        assert alive.json()["status"] == "ok"
        not_ready = httpx.get(f"{base}/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["kafka"] is False
