"""Reading a topic as it is now: from a start offset to the end offsets seen when reading
starts, so a command ends even while producers keep writing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def partitions(bootstrap: str, topics: Sequence[str]) -> list[TopicPartition]:
    """The partitions of those topics that exist. Every topic is described, not those named:
    a broker with `auto.create.topics.enable` would create a named one that does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="clinicflow-cli")
    await admin.start()
    try:
        found = await admin.describe_topics()
    finally:
        await admin.close()
    return sorted(
        TopicPartition(t["topic"], p["partition"])
        for t in found
        if not t["error_code"] and t["topic"] in topics
        for p in t["partitions"]
    )


@contextlib.asynccontextmanager
async def consumer(bootstrap: str, group: str | None = None) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer that never subscribes: partitions are assigned by hand, offsets committed
    (with `group`) only when the caller says so."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id="clinicflow-cli",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await reader.start()
    try:
        yield reader
    finally:
        await reader.stop()


async def read(
    reader: AIOKafkaConsumer,
    tps: Sequence[TopicPartition],
    start: Mapping[TopicPartition, int] | None = None,
) -> AsyncIterator[ConsumerRecord[Any, Any]]:
    """Every record of `tps` from `start` (default: the beginning) to the current end."""
    if not tps:
        return
    reader.assign(list(tps))
    ends: dict[TopicPartition, int] = await reader.end_offsets(list(tps))
    firsts: dict[TopicPartition, int] = await reader.beginning_offsets(list(tps))
    for tp in tps:
        reader.seek(tp, max((start or {}).get(tp, 0), firsts[tp]))
    open_ = {tp for tp in tps if await reader.position(tp) < ends[tp]}
    while open_:
        batch = await reader.getmany(*open_, timeout_ms=1000)
        for tp, records in batch.items():
            for record in records:
                if record.offset < ends[tp]:
                    yield record
        open_ = {tp for tp in open_ if await reader.position(tp) < ends[tp]}
