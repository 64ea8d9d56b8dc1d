"""Real servers for the tests, from the environment, from Docker, or from the local scripts.

Order of preference (issue 2): `KAFKA_BOOTSTRAP_SERVERS` / `MONGODB_URI` when set; else
testcontainers when a Docker engine answers; else a private Kafka + FerretDB pair started by
`scripts.infra` on free ports for this test session and stopped after it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from scripts import infra
from shared import tracing


@dataclass(frozen=True)
class Servers:
    kafka_bootstrap_servers: str
    mongodb_uri: str


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    env_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    env_mongo = os.environ.get("MONGODB_URI")
    if env_kafka and env_mongo:
        yield Servers(env_kafka, env_mongo)
        return
    if docker_engine_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.mongodb import MongoDbContainer

        with KafkaContainer().with_kraft() as kafka, MongoDbContainer("mongo:7") as mongo:
            yield Servers(
                env_kafka or kafka.get_bootstrap_server(), env_mongo or mongo.get_connection_url()
            )
        return
    inst = infra.Instance(
        name=f"pytest-{os.getpid()}",
        kafka_port=infra.free_port(),
        controller_port=infra.free_port(),
        mongo_port=infra.free_port(),
    )
    try:
        infra.up(inst)
        yield Servers(env_kafka or inst.bootstrap_servers, env_mongo or inst.mongodb_uri)
    finally:
        infra.down(inst, purge=True)


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix of this test's own, so no test reads another's events."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def db_name() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def mongo(servers: Servers) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongodb_uri, tz_aware=True)
    yield client
    await client.close()


@pytest.fixture
async def db(
    mongo: AsyncMongoClient[dict[str, Any]], db_name: str
) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    """A database of this test's own, dropped afterwards."""
    yield mongo[db_name]
    await mongo.drop_database(db_name)


STUCK_AFTER_SECONDS = 270


def _print_tasks(
    loop: asyncio.AbstractEventLoop, test: str, config: pytest.Config, after: float
) -> None:
    """What every task of the test's event loop is waiting on: a hung test's diagnosis."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")
    if reporter is None or capture is None:
        return
    lines = [f"=== {test} still running after {after:.0f}s; its tasks:"]
    for task in list(asyncio.all_tasks(loop)):
        lines.append(f"--- {task.get_name()}: {task.get_coro()!r}")
        for frame in task.get_stack(limit=12):
            lines.append(f"    {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
    with capture.global_and_fixture_disabled():
        reporter.write_line("\n".join(lines))


@pytest.fixture(autouse=True)
async def report_stuck_tasks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """A test that hangs gets its asyncio tasks' stacks printed before the timeout ends it."""
    loop = asyncio.get_running_loop()
    marker = request.node.get_closest_marker("timeout")
    after = STUCK_AFTER_SECONDS if marker is None else float(marker.args[0]) - 30
    args = (loop, request.node.nodeid, request.config, after)
    timer = threading.Timer(after, _print_tasks, args)
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for this test, into memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.install(None)
    provider.shutdown()
