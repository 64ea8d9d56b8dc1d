"""Consumer lag and dead-letter depth, read from Kafka: the one place that computes them, for
the services' `/metrics` and the `clinicflow status` command alike (SPEC section 9).

Both are read from Kafka itself rather than from the consumers: a consumer that is stuck, dead
or not deployed reports nothing, and that is exactly when an operator needs the number. Topics
are never created here (`auto.create.topics.enable` would create one on a metadata request for
it), so a topic that does not exist yet reads as empty.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

GROUP_SUFFIXES: dict[str, list[str]] = {
    "intake": ["-audit"],
    "scheduler": [""],
    "notifier": [""],
}
"""Each service's consumer groups, as suffixes of `<prefix><service>` (`ServiceRuntime.consumer`).
The compacted-topic views read without a group (`shared.compacted`), so they have no lag here."""


@dataclass(frozen=True)
class PartitionLag:
    """How far one group is behind on one partition; `committed` is None before its first
    commit, when everything from the beginning still waits."""

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


def service_groups(prefix: str) -> dict[str, list[str]]:
    """The consumer group ids each service uses, by service name."""
    return {
        service: [f"{prefix}{service}{suffix}" for suffix in suffixes]
        for service, suffixes in GROUP_SUFFIXES.items()
    }


async def consumer_lag(bootstrap: str, groups: Sequence[str]) -> list[PartitionLag]:
    """Lag per group, topic and partition the group has committed or is assigned to."""
    committed: dict[str, dict[TopicPartition, int | None]] = {}
    async with _admin(bootstrap) as admin:
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group)
            committed[group] = {
                tp: (meta.offset if meta.offset >= 0 else None) for tp, meta in offsets.items()
            }
        # One group a request: aiokafka misreads a DescribeGroups answer about several
        # groups from Kafka 4 (the second group's fields come out shifted, or it fails).
        for group in groups:
            for assigned_group, tps in _assignments(await admin.describe_consumer_groups([group])):
                for tp in tps:
                    committed.setdefault(assigned_group, {}).setdefault(tp, None)
        existing = await _partitions(admin)
    wanted = {tp for offsets in committed.values() for tp in offsets if tp.topic in existing}
    if not wanted:
        return []
    async with _offsets_reader(bootstrap) as consumer:
        begin = await consumer.beginning_offsets(list(wanted))
        end = await consumer.end_offsets(list(wanted))
    lags = []
    for group, offsets in committed.items():
        for tp, offset in offsets.items():
            if tp not in wanted:
                continue
            start = begin[tp] if offset is None else max(offset, begin[tp])
            lags.append(
                PartitionLag(
                    group, tp.topic, tp.partition, offset, end[tp], max(end[tp] - start, 0)
                )
            )
    return sorted(lags, key=lambda lag: (lag.group, lag.topic, lag.partition))


async def topic_depths(bootstrap: str, topics: Sequence[str]) -> dict[str, int]:
    """Records still in each topic (end minus beginning offsets over its partitions); a topic
    that does not exist holds 0. Meant for the `.dlq` topics: nothing consumes them."""
    depths = dict.fromkeys(topics, 0)
    async with _admin(bootstrap) as admin:
        existing = await _partitions(admin)
    tps = [TopicPartition(topic, p) for topic in depths for p in existing.get(topic, ())]
    if tps:
        async with _offsets_reader(bootstrap) as consumer:
            begin = await consumer.beginning_offsets(tps)
            end = await consumer.end_offsets(tps)
            for tp in tps:
                depths[tp.topic] += end[tp] - begin[tp]
    return depths


async def _partitions(admin: AIOKafkaAdminClient) -> dict[str, list[int]]:
    """Every existing topic's partitions, from one metadata request that creates nothing."""
    return {
        topic["topic"]: [p["partition"] for p in topic["partitions"]]
        for topic in await admin.describe_topics()
        if not topic["error_code"]
    }


def _assignments(responses: list[object]) -> list[tuple[str, list[TopicPartition]]]:
    """The partitions each group's live members are assigned (DescribeGroups responses)."""
    found = []
    for response in responses:
        for group in response.groups:  # type: ignore[attr-defined]
            error_code, name, _state, protocol_type, _protocol, members = group[:6]
            if error_code or protocol_type != "consumer":
                continue
            for member in members:
                raw = member[-1]
                if raw:
                    found.append((name, ConsumerProtocolMemberAssignment.decode(raw).partitions()))
    return found


@contextlib.asynccontextmanager
async def _admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="clinicflow-lag")
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def _offsets_reader(bootstrap: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A group-less consumer that only asks for offsets: it never joins, reads or commits."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, client_id="clinicflow-lag", enable_auto_commit=False
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()
