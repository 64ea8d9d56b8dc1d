"""Fixtures shared by the integration tests: the topics of a test and a started publisher."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from shared.locks import Locks
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


@pytest.fixture
async def locks(db: AsyncDatabase[dict[str, Any]]) -> Locks:
    locks = Locks(db)
    await locks.ensure_indexes()
    return locks
