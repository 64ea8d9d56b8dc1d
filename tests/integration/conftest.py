"""Fixtures shared by the integration tests: the topics of a test and a started publisher."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.publisher import KafkaPublisher
from shared.topics import Topics, ensure_topics
from tests.conftest import Servers


@pytest.fixture
async def topics(servers: Servers, topic_prefix: str) -> Topics:
    topics = Topics(topic_prefix)
    await ensure_topics(servers.kafka_bootstrap_servers, topics, partitions=3)
    return topics


@pytest.fixture
async def publisher(servers: Servers) -> AsyncIterator[KafkaPublisher]:
    publisher = KafkaPublisher(servers.kafka_bootstrap_servers, "tests")
    await publisher.start()
    yield publisher
    await publisher.stop()
