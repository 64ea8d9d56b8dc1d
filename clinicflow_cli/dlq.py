"""`clinicflow dlq list|show|replay`: read the dead letters of a topic and send them back.

A replay republishes each letter to its original topic with its original value, key and
headers (the `dlq-*` ones dropped): the same CloudEvent id, so an idempotent consumer skips
what it did already and does what it could not. What has been replayed is remembered as the
committed offsets of the consumer group `<prefix>cli-dlq-replay` on the `.dlq` topic, so a
second replay sends only letters that arrived since. A stand-in letter (`dlq-value-omitted`:
the original was too large for the DLQ and is kept in the service's `dead_letter_values`)
cannot be replayed from Kafka; it is reported and passed over.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeAlias

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from rich.console import Console
from rich.table import Table

from clinicflow_cli import kafka
from shared.events import EventKind
from shared.topics import DLQ_SUFFIX, Topics

REPLAY_GROUP = "cli-dlq-replay"
OMITTED = "dlq-value-omitted"
COMMIT_EVERY = 100
Json = dict[str, Any]
Record: TypeAlias = ConsumerRecord[bytes, bytes]


class UnknownTopic(ValueError):
    pass


def resolve(topics: Topics, name: str) -> str:
    """The `.dlq` topic meant by `screening_passed`, `clinic.screening_passed` or either with
    `.dlq`; `UnknownTopic` for a name that is no topic of the deployment."""
    base = name.removesuffix(DLQ_SUFFIX)
    known = [topics.name(kind) for kind in EventKind] + [topics.access_keys, topics.audit]
    full = base if base in known else topics.prefix + base
    if full not in known:
        raise UnknownTopic(f"{name!r} is not a topic; one of: {', '.join(known)}")
    return full + DLQ_SUFFIX


def _headers(record: Record) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in record.headers or ()}


def _envelope(value: bytes | None) -> Json:
    """The envelope's ids and type, never its data (which may be a contact)."""
    try:
        event = json.loads(value or b"")
    except ValueError:
        return {}
    if not isinstance(event, dict):
        return {}
    shown = ("id", "type", "source", "subject", "time", "siteid", "correlationid", "causationid")
    return {name: event[name] for name in shown if name in event}


def letter(record: Record) -> Json:
    headers = _headers(record)
    omitted = headers.get(OMITTED) == "true"
    return {
        "partition": record.partition,
        "offset": record.offset,
        "original_topic": headers.get("dlq-original-topic"),
        "original_partition": headers.get("dlq-original-partition"),
        "original_offset": headers.get("dlq-original-offset"),
        "event_id": None if omitted else _envelope(record.value).get("id"),
        "error_type": headers.get("dlq-error-type"),
        "error": headers.get("dlq-error"),
        "consumer_group": headers.get("dlq-consumer-group"),
        "failed_at": headers.get("dlq-failed-at"),
        "value_omitted": omitted,
    }


async def letters(bootstrap: str, dlq: str) -> list[Record]:
    async with kafka.consumer(bootstrap) as reader:
        return [r async for r in kafka.read(reader, await kafka.partitions(bootstrap, [dlq]))]


async def show(bootstrap: str, dlq: str, partition: int, offset: int) -> Json | None:
    """One letter's headers and envelope ids; None when there is no such letter."""
    tp = TopicPartition(dlq, partition)
    if tp not in await kafka.partitions(bootstrap, [dlq]):
        return None
    async with kafka.consumer(bootstrap) as reader:
        async for record in kafka.read(reader, [tp], {tp: offset}):
            if record.offset != offset:
                return None  # compacted or deleted by retention
            return {**letter(record), "headers": _headers(record), **_envelope(record.value)}
    return None


async def replay(
    bootstrap: str,
    topics: Topics,
    dlq: str,
    *,
    dry_run: bool,
    progress: Callable[[int, int], None],
) -> Json:
    """Republish the letters not replayed yet; `progress(done, total)` after each one."""
    group = topics.prefix + REPLAY_GROUP
    tps = await kafka.partitions(bootstrap, [dlq])
    replayed: list[Json] = []
    skipped: list[Json] = []
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", client_id="clinicflow-cli")
    if not dry_run:
        await producer.start()
    try:
        async with kafka.consumer(bootstrap, group) as reader:
            start = {tp: (await reader.committed(tp)) or 0 for tp in tps}
            reader.assign(tps)
            ends = await reader.end_offsets(tps)
            firsts = await reader.beginning_offsets(tps)
            total = sum(max(ends[tp] - max(start[tp], firsts[tp]), 0) for tp in tps)
            progress(0, total)
            done: dict[TopicPartition, int] = {}
            async for record in kafka.read(reader, tps, start):
                found = letter(record)
                where = {"partition": record.partition, "offset": record.offset}
                if found["value_omitted"] or not found["original_topic"]:
                    why = "value omitted (kept in the service's dead_letter_values)"
                    if not found["value_omitted"]:
                        why = "no dlq-original-topic header"
                    skipped.append({**where, "event_id": found["event_id"], "why": why})
                else:
                    if not dry_run:
                        await producer.send_and_wait(
                            found["original_topic"],
                            record.value,
                            key=record.key,
                            headers=[(k, v) for k, v in record.headers if not k.startswith("dlq-")],
                        )
                    replayed.append(
                        {**where, "event_id": found["event_id"], "to": found["original_topic"]}
                    )
                tp = TopicPartition(record.topic, record.partition)
                done[tp] = record.offset + 1
                handled = len(replayed) + len(skipped)
                progress(handled, total)
                if not dry_run and handled % COMMIT_EVERY == 0:
                    await reader.commit(done)
            if not dry_run and done:
                await reader.commit(done)
    finally:
        if not dry_run:
            await producer.stop()
    return {"topic": dlq, "dry_run": dry_run, "replayed": replayed, "skipped": skipped}


def render_list(dlq: str, found: list[Json], console: Console) -> None:
    table = Table("at", "original", "event id", "error", "failed at",
                  title=f"{dlq}: {len(found)} dead letters")  # fmt: skip
    for item in found:
        original = (
            f"{item['original_topic']}:{item['original_partition']}:{item['original_offset']}"
        )
        error = f"{item['error_type']}: {item['error']}"
        if item["value_omitted"]:
            error += " (value omitted)"
        table.add_row(
            f"{item['partition']}:{item['offset']}",
            original,
            item["event_id"] or "-",
            error,
            item["failed_at"] or "-",
        )
    console.print(table)


def render_show(found: Json, console: Console) -> None:
    table = Table("field", "value", title=f"dead letter {found['partition']}:{found['offset']}")
    for name in ("id", "type", "source", "subject", "time", "siteid", "correlationid",
                 "causationid"):  # fmt: skip
        if name in found:
            table.add_row(name, str(found[name]))
    for name, value in found["headers"].items():
        table.add_row(f"header {name}", value)
    console.print(table)


def render_replay(found: Json, console: Console) -> None:
    verb = "would replay" if found["dry_run"] else "replayed"
    console.print(f"{verb} {len(found['replayed'])} dead letters of {found['topic']}")
    for item in found["skipped"]:
        console.print(
            f"[yellow]skipped[/yellow] {item['partition']}:{item['offset']} "
            f"(event {item['event_id'] or '-'}): {item['why']}"
        )
