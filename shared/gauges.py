"""Consumer lag and DLQ depth of one service, read from Kafka on a timer for `/metrics`.

Reading Kafka on every scrape would let a slow broker slow `/metrics` down and multiply the
admin requests by the number of scrapers; a worker refreshes the gauges instead (every
`metrics_interval_seconds`, 15 s by default: a few metadata and offset requests each time).
Only the service's own groups and the DLQs of the topics it reads are watched, so the three
services together cover every group and DLQ without reporting one twice.
"""

from __future__ import annotations

import logging

from shared.consumer import IdempotentConsumer
from shared.lag import consumer_lag, topic_depths
from shared.metrics import CONSUMER_LAG, DLQ_DEPTH
from shared.topics import DLQ_SUFFIX

log = logging.getLogger(__name__)


class KafkaGauges:
    """The consumers and compacted-topic views of a service, and the gauges they feed."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.consumers: list[IdempotentConsumer] = []
        self.view_topics: set[str] = set()
        """Views read without a group (no lag), but dead-letter what they cannot parse."""

    async def refresh(self) -> int:
        """Set the gauges from Kafka; a failure leaves them as they were (readiness reports
        Kafka being down). Always 0: a `periodic` step with no backlog of its own."""
        groups = sorted({consumer.group_id for consumer in self.consumers})
        read = {topic for consumer in self.consumers for topic in consumer.topics_read}
        dlqs = sorted(topic + DLQ_SUFFIX for topic in read | self.view_topics)
        try:
            lags = await consumer_lag(self.bootstrap_servers, groups)
            depths = await topic_depths(self.bootstrap_servers, dlqs)
        except Exception as exc:
            log.warning("reading consumer lag from Kafka failed: %s", type(exc).__name__)
            return 0
        for lag in lags:
            CONSUMER_LAG.labels(lag.group, lag.topic, str(lag.partition)).set(lag.lag)
        for topic, depth in depths.items():
            DLQ_DEPTH.labels(topic).set(depth)
        return 0
