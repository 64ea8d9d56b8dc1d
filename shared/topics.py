"""Topic names and their creation: one place that knows every topic and its settings."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.events import COMPACTED, EventKind

DLQ_SUFFIX = ".dlq"
ACCESS_KEYS = "access_keys"
AUDIT = "audit"


@dataclass(frozen=True)
class Topics:
    """Topic names under a deployment's prefix (SPEC: `CLINICFLOW_TOPIC_PREFIX`, `clinic.`)."""

    prefix: str = "clinic."

    def name(self, kind: EventKind) -> str:
        return self.prefix + kind.value

    def dlq(self, kind: EventKind) -> str:
        return self.name(kind) + DLQ_SUFFIX

    @property
    def access_keys(self) -> str:
        """The compacted topic of API key records (hashes only), read by every service."""
        return self.prefix + ACCESS_KEYS

    @property
    def audit(self) -> str:
        """Audit entries of the scheduler and notifier, collected by intake (`GET /v1/audit`)."""
        return self.prefix + AUDIT

    def kind(self, topic: str) -> EventKind:
        return EventKind(topic.removeprefix(self.prefix).removesuffix(DLQ_SUFFIX))


async def ensure_topics(
    bootstrap_servers: str,
    topics: Topics,
    *,
    partitions: int = 6,
    replication_factor: int = 1,
) -> None:
    """Create every event topic and its DLQ, and the access-keys and audit topics.

    Topics that exist are left as they are.
    """
    wanted = []
    for kind in EventKind:
        config = {"cleanup.policy": "compact"} if kind in COMPACTED else {}
        wanted.append(
            NewTopic(topics.name(kind), partitions, replication_factor, topic_configs=config)
        )
        wanted.append(NewTopic(topics.dlq(kind), partitions, replication_factor))
    wanted.append(
        NewTopic(
            topics.access_keys, 1, replication_factor, topic_configs={"cleanup.policy": "compact"}
        )
    )
    wanted.append(NewTopic(topics.access_keys + DLQ_SUFFIX, 1, replication_factor))
    wanted.append(NewTopic(topics.audit, partitions, replication_factor))
    wanted.append(NewTopic(topics.audit + DLQ_SUFFIX, partitions, replication_factor))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            response = await admin.create_topics(missing)
            for name, code, *message in response.topic_errors:
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise RuntimeError(f"creating topic {name} failed: error {code} {message}")
    finally:
        await admin.close()
