"""Prometheus metrics of the messaging backbone, served by every service at `/metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "clinicflow_events_consumed_total",
    "Events a consumer group took off a topic, by outcome.",
    ["topic", "group", "outcome"],
)
OUTBOX_PUBLISHED = Counter(
    "clinicflow_outbox_published_total",
    "Outbox entries published to Kafka by the relay.",
    ["topic"],
)
OUTBOX_LAG = Histogram(
    "clinicflow_outbox_lag_seconds",
    "Time from an outbox entry being stored to its publication.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
OUTBOX_DEAD_LETTERED = Counter(
    "clinicflow_outbox_dead_lettered_total",
    "Outbox entries Kafka refused for good (too large, invalid), kept in outbox_dead_letters.",
    ["topic"],
)
CONSUMER_LAG = Gauge(
    "clinicflow_consumer_lag_records",
    "Records a consumer group has yet to process, per topic and partition (read from Kafka).",
    ["group", "topic", "partition"],
)
DLQ_DEPTH = Gauge(
    "clinicflow_dlq_depth_records",
    "Records in a dead-letter topic of what this service reads (nothing consumes them).",
    ["topic"],
)
READY = Gauge(
    "clinicflow_ready",
    "1 when this readiness check of `/readyz` passes, else 0 (refreshed on each scrape).",
    ["check"],
)
