"""Fixtures shared by the integration tests: the topics of a test and a started publisher."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from shared.locks import Locks
from shared.publisher import KafkaPublisher
from shared.settings import ServiceSettings
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


@pytest.fixture
def service_settings(
    servers: Servers, topics: Topics, db_name: str
) -> Callable[[str], ServiceSettings]:
    """Settings of a service named as asked, on this test's servers, topics and database."""

    def settings(service_name: str) -> ServiceSettings:
        return ServiceSettings(
            kafka_bootstrap_servers=servers.kafka_bootstrap_servers,
            mongodb_uri=servers.mongodb_uri,
            mongodb_database=db_name,
            topic_prefix=topics.prefix,
            environment="test",
            topic_partitions=3,
            service_name=service_name,
        )

    return settings
