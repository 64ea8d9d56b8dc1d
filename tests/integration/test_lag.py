"""Consumer lag and DLQ depth read from a real Kafka broker (`shared.lag`)."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.lag import PartitionLag, consumer_lag, service_groups, topic_depths
from tests.conftest import Servers

pytestmark = pytest.mark.integration


async def make_topic(bootstrap: str, partitions: int = 2) -> str:
    name = f"lag-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


async def produce(bootstrap: str, topic: str, per_partition: dict[int, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition, count in per_partition.items():
            for i in range(count):
                await producer.send_and_wait(topic, f"r{i}".encode(), partition=partition)
    finally:
        await producer.stop()


async def commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def test_lag_counts_the_records_a_group_has_not_committed(servers: Servers) -> None:
    bootstrap = servers.kafka_bootstrap_servers
    topic = await make_topic(bootstrap)
    await produce(bootstrap, topic, {0: 5, 1: 3})
    group = f"g-{uuid.uuid4().hex[:8]}"
    await commit(bootstrap, group, {TopicPartition(topic, 0): 2, TopicPartition(topic, 1): 3})

    lags = await consumer_lag(bootstrap, [group])

    assert lags == [
        PartitionLag(group, topic, 0, committed=2, end=5, lag=3),
        PartitionLag(group, topic, 1, committed=3, end=3, lag=0),
    ]
    await commit(bootstrap, group, {TopicPartition(topic, 0): 5})
    assert [lag.lag for lag in await consumer_lag(bootstrap, [group])] == [0, 0]


async def test_an_assigned_group_without_commits_lags_by_everything(servers: Servers) -> None:
    bootstrap = servers.kafka_bootstrap_servers
    topic = await make_topic(bootstrap, partitions=1)
    await produce(bootstrap, topic, {0: 4})
    group = f"g-{uuid.uuid4().hex[:8]}"
    member = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await member.start()
    try:
        while not member.assignment():
            await member.getmany(timeout_ms=100, max_records=0)
        lags = await consumer_lag(bootstrap, [group])
    finally:
        await member.stop()

    assert lags == [PartitionLag(group, topic, 0, committed=None, end=4, lag=4)]


async def test_an_unknown_group_has_no_lag(servers: Servers) -> None:
    assert await consumer_lag(servers.kafka_bootstrap_servers, [f"none-{uuid.uuid4()}"]) == []


async def test_depth_sums_partitions_and_a_missing_topic_is_empty(servers: Servers) -> None:
    bootstrap = servers.kafka_bootstrap_servers
    topic = await make_topic(bootstrap)
    await produce(bootstrap, topic, {0: 2, 1: 1})
    missing = f"missing-{uuid.uuid4().hex[:8]}.dlq"

    assert await topic_depths(bootstrap, [topic, missing]) == {topic: 3, missing: 0}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        assert missing not in await admin.list_topics()  # reading a depth creates nothing
    finally:
        await admin.close()


def test_service_groups_name_each_services_groups() -> None:
    assert service_groups("clinic.") == {
        "intake": ["clinic.intake-audit"],
        "scheduler": ["clinic.scheduler"],
        "notifier": ["clinic.notifier"],
    }
