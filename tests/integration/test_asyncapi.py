"""The AsyncAPI document passes the official `@asyncapi/parser` with no error and no warning, as
committed and as served, and says what clinicflow's records really are (issue 13): checked
against records built by the real code and topics created by a real service.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError
from pymongo.asynchronous.database import AsyncDatabase

from scripts.infra import free_port
from shared.deadletter import DLQ_HEADERS, DeadLetters, RawRecord
from shared.envelope import CONTENT_TYPE, Record, build, tombstone
from shared.events import COMPACTED, EventKind
from shared.examples import EXAMPLES
from shared.schemas import DOCS, asyncapi_for, event_model
from shared.topics import Topics
from tests.conftest import Servers
from tests.procs import REPO, service_process, wait_for

pytestmark = pytest.mark.integration

NODE_DIR = REPO / "tests" / "node"
TOPICS = Topics()


def official_parser(source: str) -> list[dict[str, Any]]:
    """The diagnostics of `tests/node/validate-asyncapi.mjs`; fails, never skips, without node."""
    node = shutil.which("node")
    assert node, "node not found: the AsyncAPI check needs Node.js 20+ on the PATH"
    assert (NODE_DIR / "node_modules" / "@asyncapi" / "parser").is_dir(), (
        "tests/node has no node_modules: run `make install`"
    )
    run = subprocess.run(
        [node, str(NODE_DIR / "validate-asyncapi.mjs"), source],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode in (0, 1), f"the validator could not run: {run.stderr}"
    report = json.loads(run.stdout)
    problems = [d for d in report["diagnostics"] if d["severity"] in ("error", "warning")]
    assert (run.returncode == 0) == (not problems), run.stdout
    diagnostics: list[dict[str, Any]] = report["diagnostics"]
    return diagnostics


def errors_and_warnings(diagnostics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in diagnostics if d["severity"] in ("error", "warning")]


def committed() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((DOCS / "asyncapi.json").read_text())
    return document


def resolve(document: dict[str, Any], node: dict[str, Any]) -> Any:
    """Follow a local `$ref` (the document is self-contained: the parser checks that)."""
    while "$ref" in node:
        found: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            found = found[part]
        node = found
    return node


def assert_valid(document: dict[str, Any], instance: Any, schema: dict[str, Any]) -> None:
    """Validate against a schema of the document, its `#/components/...` refs resolved."""
    jsonschema.validate(instance, {**schema, "components": document["components"]})


def channel_messages(document: dict[str, Any], address: str) -> dict[str, Any]:
    channel = document["channels"][address]
    return {name: resolve(document, ref) for name, ref in channel["messages"].items()}


def kafka_key(message: dict[str, Any]) -> dict[str, Any]:
    key: dict[str, Any] = message["bindings"]["kafka"]["key"]
    return key


def test_committed_document_passes_the_official_parser() -> None:
    assert errors_and_warnings(official_parser(str(DOCS / "asyncapi.json"))) == []


def test_events_declare_content_type_correlation_id_key_and_headers() -> None:
    document = committed()
    assert document["defaultContentType"] == CONTENT_TYPE == "application/cloudevents+json"
    for kind in EventKind:
        record = build(EXAMPLES[kind], source="intake", prefix=TOPICS.prefix)
        value = json.loads(record.value or b"")
        message = channel_messages(document, TOPICS.name(kind))["Message"]
        assert message["contentType"] == CONTENT_TYPE
        correlation = resolve(document, message["correlationId"])
        assert correlation["location"] == "$message.payload#/correlationid"
        assert value["correlationid"], "the location names a field every event carries"
        assert message["bindings"]["kafka"]["bindingVersion"] == "0.5.0"
        key_schema = resolve(document, kafka_key(message))
        assert key_schema["title"] == ("SiteId" if kind is EventKind.SITE_UPDATED else "ClientId")
        key_field = "site_id" if kind is EventKind.SITE_UPDATED else "client_id"
        assert record.key == value["data"][key_field]
        assert_valid(document, record.key, kafka_key(message))
        assert record.headers == {"content-type": CONTENT_TYPE}
        headers = resolve(document, message["headers"])
        assert headers["required"] == ["content-type"]
        assert_valid(document, record.headers, message["headers"])
        assert_valid(document, value, message["payload"])


def test_compacted_topics_say_so_and_document_their_tombstones() -> None:
    document = committed()
    for kind in EventKind:
        topic = TOPICS.name(kind)
        kafka = document["channels"][topic]["bindings"]["kafka"]
        policy = kafka["topicConfiguration"]["cleanup.policy"]
        assert policy == (["compact"] if kind in COMPACTED else ["delete"]), topic
        assert (kafka["partitions"], kafka["replicas"]) == (6, 1)  # ServiceSettings' defaults
        messages = channel_messages(document, topic)
        if kind not in COMPACTED:
            assert set(messages) == {"Message"}
            continue
        key = build(EXAMPLES[kind], source="intake", prefix=TOPICS.prefix).key
        erased = tombstone(kind, key, prefix=TOPICS.prefix)
        stone = messages["Tombstone"]
        assert erased.value is None
        assert_valid(document, None, stone["payload"])
        assert_valid(document, erased.key, kafka_key(stone))
        assert_valid(document, erased.headers, stone["headers"])
        operation = document["operations"][topic]
        assert {"$ref": f"#/channels/{topic}/messages/Tombstone"} in operation["messages"]


class RecordingPublisher:
    """Takes what DeadLetters sends; refuses the first send when asked, as Kafka does when the
    copy grows past its limit with the dlq-* headers."""

    def __init__(self, *, refuse_first: bool) -> None:
        self.refuse = refuse_first
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> None:
        if self.refuse:
            self.refuse = False
            raise MessageSizeTooLargeError()
        self.sent.append((topic, value, key, headers))

    async def send_many(self, records: list[Record]) -> None:
        raise NotImplementedError


@pytest.mark.parametrize("refused", [False, True], ids=["copied", "stand-in"])
async def test_each_dlq_channel_describes_what_dead_lettering_sends(
    db: AsyncDatabase[dict[str, Any]], refused: bool
) -> None:
    document = committed()
    for kind in EventKind:
        record = build(EXAMPLES[kind], source="intake", prefix=TOPICS.prefix)
        raw = RawRecord(
            record.topic, 2, 41, record.key.encode(), record.value,
            [(k, v.encode()) for k, v in record.headers.items()],
        )  # fmt: skip
        publisher = RecordingPublisher(refuse_first=refused)
        await DeadLetters(publisher, db).send(raw, ValueError("boom"), group="g", attempts=3)
        [(topic, value, key, headers)] = publisher.sent
        assert topic == TOPICS.dlq(kind)
        channel = document["channels"][topic]
        assert channel["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"] == ["delete"]
        assert document["operations"][topic]["channel"] == {"$ref": f"#/channels/{topic}"}
        message = channel_messages(document, topic)["DeadLetter"]
        decoded = {name: v.decode() for name, v in headers}
        assert_valid(document, decoded, message["headers"])
        declared = resolve(document, message["headers"])
        assert set(DLQ_HEADERS) <= set(declared["required"])
        assert set(decoded) <= set(declared["properties"]), "every header sent is declared"
        assert ("dlq-value-omitted" in decoded) is refused
        assert (value == raw.value) is not refused, "the value as published, or a stand-in"
        assert key == raw.key
        assert_valid(document, record.key, kafka_key(message))
        # The payload admits anything (a DLQ holds what could not be read): check the branch.
        branch = "DeadLetterStandIn" if refused else event_model(kind).__name__
        branch_ref = {"$ref": f"#/components/schemas/{branch}"}
        assert branch_ref in message["payload"]["anyOf"]
        assert_valid(document, json.loads(value or b""), branch_ref)


def test_served_document_passes_the_parser_and_matches_the_topics_the_service_creates(
    servers: Servers, topic_prefix: str, db_name: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": servers.kafka_bootstrap_servers,
        "MONGODB_URI": servers.mongodb_uri,
        "MONGODB_DATABASE": db_name,
        "CLINICFLOW_TOPIC_PREFIX": topic_prefix,
        "CLINICFLOW_TOPIC_PARTITIONS": "2",
        "CLINICFLOW_ENVIRONMENT": "test",
    }
    with service_process("scheduler", port, env, tmp_path / "scheduler.log"):
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/readyz", 200)  # its topics are created by then
        url = f"{base}/asyncapi.json"
        assert errors_and_warnings(official_parser(url)) == []
        served = wait_for(url).json()
    assert served == asyncapi_for(topic_prefix, 2, 1)
    assert asyncio.run(topic_facts(servers, list(served["channels"]))) == {
        address: (
            channel["bindings"]["kafka"]["partitions"],
            ",".join(channel["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"]),
        )
        for address, channel in served["channels"].items()
    }
    topics = Topics(topic_prefix)
    assert set(served["channels"]) == {
        name for kind in EventKind for name in (topics.name(kind), topics.dlq(kind))
    }


async def topic_facts(servers: Servers, names: list[str]) -> dict[str, tuple[int, str]]:
    """Each topic's partition count and cleanup.policy, as the broker has them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers.kafka_bootstrap_servers)
    await admin.start()
    try:
        metadata = await admin.describe_topics(names)
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    partitions = {topic["topic"]: len(topic["partitions"]) for topic in metadata}
    policies = {
        resource[3]: {entry[0]: entry[1] for entry in resource[4]}["cleanup.policy"]
        for response in described
        for resource in response.resources
    }
    return {name: (partitions[name], policies[name]) for name in names}
