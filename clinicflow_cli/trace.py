"""`clinicflow trace CLIENT_ID`: one client's workflow across the workflow topics, in causal
order, as ids and codes only.

Every workflow event is keyed by client_id, so one client's events are on one partition of each
topic (the producers' default partitioner); only that partition is read, from the beginning to
its end when the command starts. What is shown of `data` is an allow-list per type: never a
screening's reasons (they are derived from health answers), a free-text cancellation reason,
an aftercare text or anything from `client_contact`, which is not a workflow topic at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from rich.console import Console
from rich.table import Table

from clinicflow_cli import kafka
from shared.events import COMPACTED, EventKind
from shared.topics import Topics

WORKFLOW = [kind for kind in EventKind if kind not in COMPACTED]
SHOWN: dict[EventKind, tuple[str, ...]] = {
    EventKind.SCREENING_PASSED: ("screening_id", "policy_version", "valid_until"),
    EventKind.SCREENING_FAILED: ("screening_id", "outcome", "recheck_after", "policy_version"),
    EventKind.SESSION_SCHEDULED: ("session_id", "plan_id", "sequence", "total_sessions",
                                  "starts_at"),
    EventKind.SESSION_CANCELLED: ("session_id", "plan_id", "reason"),
    EventKind.SESSION_COMPLETED: ("session_id", "plan_id", "sequence", "total_sessions",
                                  "completed_at", "next_session_earliest"),
    EventKind.AFTERCARE_DUE: ("aftercare_id", "session_id", "step", "due_at"),
}  # fmt: skip
"""The `data` fields a trace shows: ids, codes, numbers and instants."""
CODE = re.compile(r"^[a-z0-9_]{1,64}$")
Json = dict[str, Any]


def summary(kind: EventKind, data: Json) -> Json:
    """The allowed fields of an event's data; a cancellation reason only when it is a code."""
    shown = {name: data[name] for name in SHOWN[kind] if name in data}
    if kind is EventKind.SCREENING_PASSED:
        shown["outcome"] = "passed"
    reason = shown.get("reason")
    if reason is not None and not (isinstance(reason, str) and CODE.match(reason)):
        shown["reason"] = "(free text)"
    return shown


def entry(topics: Topics, kind: EventKind, value: bytes) -> Json | None:
    """The trace line of one record, or None when its value is not a CloudEvent."""
    try:
        event = json.loads(value)
        data = event.get("data") or {}
        return {
            "topic": topics.name(kind),
            "type": event["type"],
            "time": event["time"],
            "id": event["id"],
            "causation_id": event.get("causationid"),
            "correlation_id": event.get("correlationid"),
            "site_id": event.get("siteid"),
            "data": summary(kind, data if isinstance(data, dict) else {}),
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def causal_order(events: Iterable[Json]) -> list[Json]:
    """Each event after the one that caused it (its `causation_id`), siblings and roots by
    time; `depth` counts the causes above it. A repeat of an id (a redelivery) shows once."""
    unique: dict[str, Json] = {}
    for event in events:
        unique.setdefault(event["id"], event)
    children: dict[str | None, list[Json]] = {}
    for event in unique.values():
        cause = event["causation_id"] if event["causation_id"] in unique else None
        children.setdefault(cause, []).append(event)
    ordered: list[Json] = []

    def visit(cause: str | None, depth: int) -> None:
        for event in sorted(children.get(cause, []), key=lambda e: (e["time"], e["id"])):
            ordered.append({**event, "depth": depth})
            visit(event["id"], depth + 1)

    visit(None, 0)
    return ordered


async def trace(bootstrap: str, topics: Topics, client_id: str) -> list[Json]:
    key = client_id.encode()
    names = {topics.name(kind): kind for kind in WORKFLOW}
    found = await kafka.partitions(bootstrap, list(names))
    counts: dict[str, list[int]] = {}
    for tp in found:
        counts.setdefault(tp.topic, []).append(tp.partition)
    partitioner = DefaultPartitioner()
    tps = [
        TopicPartition(topic, partitioner(key, sorted(ps), sorted(ps)))
        for topic, ps in counts.items()
    ]
    events = []
    async with kafka.consumer(bootstrap) as reader:
        async for record in kafka.read(reader, tps):
            if record.key == key and record.value is not None:
                line = entry(topics, names[record.topic], record.value)
                if line is not None:
                    events.append(line)
    return causal_order(events)


def _details(data: Json) -> str:
    return " ".join(f"{name}={value}" for name, value in data.items())


def render(client_id: str, events: list[Json], console: Console) -> None:
    table = Table("time", "event", "id", "caused by", "site", "details",
                  title=f"workflow of client {client_id}")  # fmt: skip
    for event in events:
        table.add_row(
            event["time"],
            "  " * event["depth"] + event["topic"],
            event["id"],
            event["causation_id"] or "-",
            event["site_id"] or "-",
            _details(event["data"]),
        )
    console.print(table)
