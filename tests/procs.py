"""Run a service as a real process (`python -m services.<name>`) for tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from scripts.infra import free_port
from tests.access import StaffAuth, staff
from tests.conftest import Servers

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def service_process(
    name: str, port: int, env: dict[str, str], logfile: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start the service, yield the process, and stop it with SIGTERM afterwards."""
    full_env = {**os.environ, **env, "CLINICFLOW_HTTP_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    with logfile.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=REPO,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(url: str, status: int = 200, timeout: float = 60.0) -> httpx.Response:
    """Poll `url` until it answers `status`; the last answer is returned or the wait fails."""
    deadline = time.monotonic() + timeout
    last: httpx.Response | str = "no answer"
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=2)
            if last.status_code == status:
                return last
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer {status} in {timeout}s; last: {last}")


@dataclass
class Stack:
    """The three services as real processes on free ports, sharing one Kafka and MongoDB."""

    ports: dict[str, int]
    env: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]]
    auth: StaffAuth
    db_name: str

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def database(self, service: str) -> str:
        return service_database(self.db_name, service)


def service_database(db_name: str, service: str) -> str:
    """Each service of a test stack has a database of its own, named after the stack's."""
    return f"{db_name}_{service}"


@contextlib.contextmanager
def stack(servers: Servers, topic_prefix: str, db_name: str, logs: Path) -> Iterator[Stack]:
    """Start intake, scheduler and notifier with the demo sites and wait until all are ready."""
    ports = {name: free_port() for name in ("intake", "scheduler", "notifier")}
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": servers.kafka_bootstrap_servers,
        "MONGODB_URI": servers.mongodb_uri,
        "CLINICFLOW_TOPIC_PREFIX": topic_prefix,
        "CLINICFLOW_ENVIRONMENT": "test",
        "CLINICFLOW_TOPIC_PARTITIONS": "3",
        "CLINICFLOW_HEALTH_KEY": Fernet.generate_key().decode(),
        "CLINICFLOW_SITES_FILE": str(REPO / "deploy" / "sites.demo.yaml"),
        "CLINICFLOW_WEBHOOKS_ALLOW_PRIVATE": "true",
        "CLINICFLOW_TIMER_INTERVAL_SECONDS": "0.2",
        "CLINICFLOW_DELIVERY_BACKOFF_SECONDS": "0.2",
        "CLINICFLOW_LEASE_SECONDS": "3",
    }
    # A thread of its own: the async tests that call this already run an event loop.
    with ThreadPoolExecutor(1) as thread:
        auth = thread.submit(
            asyncio.run, staff(servers.kafka_bootstrap_servers, topic_prefix)
        ).result()
    with contextlib.ExitStack() as exits:
        processes = {
            name: exits.enter_context(
                service_process(
                    name,
                    port,
                    {**env, "MONGODB_DATABASE": service_database(db_name, name)},
                    logs / f"{name}.log",
                )
            )
            for name, port in ports.items()
        }
        current = Stack(ports, env, logs, processes, auth, db_name)
        for name in ports:
            wait_for(f"{current.url(name)}/readyz", 200, timeout=90)
        yield current
