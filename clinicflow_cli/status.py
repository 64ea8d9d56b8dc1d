"""`clinicflow status` and `clinicflow stalled`: the stack's health from one terminal.

Readiness comes from each service's open `/readyz`; outbox backlog, due-but-unsent aftercare
and stalled plans from its `/v1/ops` routes (an ops key); consumer lag and DLQ depth from Kafka
itself (`shared.lag`), so they show even when a service is down. A service that does not
answer is reported down, never a crash.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from clinicflow_cli.config import CliSettings
from shared.events import EventKind
from shared.lag import consumer_lag, service_groups, topic_depths
from shared.topics import DLQ_SUFFIX, Topics

TIMEOUT = 5.0
KAFKA_TIMEOUT = 20.0
Json = dict[str, Any]


def dlq_topics(topics: Topics) -> list[str]:
    """Every dead-letter topic of the deployment."""
    names = [topics.name(kind) for kind in EventKind] + [topics.access_keys, topics.audit]
    return [name + DLQ_SUFFIX for name in names]


class Unanswered(Exception):
    """A service gave no usable answer; the message says why in a few words."""


async def _get(
    client: httpx.AsyncClient, url: str, key: str | None, ok: tuple[int, ...] = (200,)
) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        answer = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise Unanswered(f"no answer ({type(exc).__name__})") from exc
    if answer.status_code not in ok:
        raise Unanswered(f"HTTP {answer.status_code}")
    try:
        return answer.json()
    except ValueError as exc:
        raise Unanswered(f"HTTP {answer.status_code}, not JSON") from exc


async def _service(client: httpx.AsyncClient, url: str, key: str | None) -> Json:
    found: Json = {
        "url": url,
        "state": "down",
        "checks": {},
        "outbox": None,
        "due_unsent": None,
        "disabled_webhooks": None,
    }
    try:
        ready = await _get(client, f"{url}/readyz", None, ok=(200, 503))
        found["state"] = "ready" if ready.get("status") == "ready" else "not ready"
        found["checks"] = ready.get("checks", {})
    except Unanswered:
        pass
    found["ops_error"] = None if key else "no CLINICFLOW_API_KEY"
    if key:
        try:
            ops = await _get(client, f"{url}/v1/ops/status", key)
            found["outbox"], found["due_unsent"] = ops["outbox"], ops.get("due_unsent")
            found["disabled_webhooks"] = ops.get("disabled_webhooks")
        except Unanswered as exc:
            found["ops_error"] = str(exc)
    return found


async def _kafka(settings: CliSettings) -> Json:
    bootstrap = settings.kafka_bootstrap_servers
    groups = [g for names in service_groups(settings.topic_prefix).values() for g in names]
    try:
        async with asyncio.timeout(KAFKA_TIMEOUT):
            lags = await consumer_lag(bootstrap, groups)
            depths = await topic_depths(bootstrap, dlq_topics(settings.topics))
    except Exception as exc:
        return {"error": f"Kafka did not answer ({type(exc).__name__})", "lag": [], "dlq": {}}
    return {"error": None, "lag": [asdict(lag) for lag in lags], "dlq": depths}


async def gather(settings: CliSettings, *, max_lag: int) -> Json:
    """Everything `status` shows, and the problems that make it exit non-zero."""
    key = settings.api_key.get_secret_value() if settings.api_key else None
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        found = await asyncio.gather(
            _kafka(settings),
            *(_service(client, url, key) for url in settings.urls().values()),
        )
    kafka, services = found[0], dict(zip(settings.urls(), found[1:], strict=True))
    problems = []
    for name, service in services.items():
        if service["state"] != "ready":
            problems.append(f"{name} is {service['state']}")
        if service["ops_error"] and service["state"] != "down":
            problems.append(f"{name} ops status: {service['ops_error']}")
        elif service["outbox"] and service["outbox"]["dead_letters"]:
            problems.append(f"{name} outbox kept {service['outbox']['dead_letters']} dead letters")
        if service["disabled_webhooks"]:
            problems.append(
                f"{name} has {service['disabled_webhooks']} disabled webhook subscriptions "
                "(their owners must recover them)"
            )
    if kafka["error"]:
        problems.append(kafka["error"])
    for topic, depth in kafka["dlq"].items():
        if depth:
            problems.append(f"{topic} holds {depth} dead letters")
    behind: dict[tuple[str, str], int] = {}
    for lag in kafka["lag"]:
        where = (lag["group"], lag["topic"])
        behind[where] = behind.get(where, 0) + lag["lag"]
    for (group, topic), lag in behind.items():
        if lag > max_lag:
            problems.append(f"{group} is {lag} records behind on {topic}")
    return {
        "healthy": not problems,
        "problems": problems,
        "services": services,
        "lag": kafka["lag"],
        "dlq": kafka["dlq"],
    }


async def stalled(settings: CliSettings) -> list[Json]:
    """The scheduler's stalled plans; `Unanswered` when they cannot be read."""
    if settings.api_key is None:
        raise Unanswered("no CLINICFLOW_API_KEY")
    key = settings.api_key.get_secret_value()
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        plans: list[Json] = await _get(
            client, f"{settings.urls()['scheduler']}/v1/ops/stalled", key
        )
    return plans


def _count(value: Any) -> str:
    return "-" if value is None else str(value)


def render(found: Json, console: Console) -> None:
    services = Table("service", "state", "outbox queued", "expired leases", "outbox dead",
                     "due unsent", "disabled webhooks", "ops status", title="services")  # fmt: skip
    for name, service in found["services"].items():
        outbox = service["outbox"] or {}
        state = service["state"]
        colour = "green" if state == "ready" else "red"
        services.add_row(
            name,
            f"[{colour}]{state}[/{colour}]",
            _count(outbox.get("queued")),
            _count(outbox.get("expired_leases")),
            _count(outbox.get("dead_letters")),
            _count(service["due_unsent"]),
            _count(service["disabled_webhooks"]),
            service["ops_error"] or "ok",
        )
    console.print(services)
    lag = Table("group", "topic", "partitions", "lag", title="consumer lag")
    totals: dict[tuple[str, str], list[int]] = {}
    for row in found["lag"]:
        total = totals.setdefault((row["group"], row["topic"]), [0, 0])
        total[0] += 1
        total[1] += row["lag"]
    for (group, topic), (partitions, behind) in sorted(totals.items()):
        lag.add_row(group, topic, str(partitions), str(behind))
    console.print(lag)
    dlq = Table("dead-letter topic", "depth", title="dead letters")
    for topic, depth in found["dlq"].items():
        dlq.add_row(topic, f"[red]{depth}[/red]" if depth else "0")
    console.print(dlq)
    if found["healthy"]:
        console.print("[green]healthy[/green]")
    for problem in found["problems"]:
        console.print(f"[red]unhealthy:[/red] {problem}")


def render_stalled(plans: list[Json], console: Console) -> None:
    table = Table("plan_id", "client_id", "site", "next", "window", "booked at", "reason",
                  title="stalled plans")  # fmt: skip
    for plan in plans:
        table.add_row(
            plan["plan_id"],
            plan["client_id"],
            plan["site_id"],
            f"{plan['next_sequence']}/{plan['total_sessions']}",
            f"{plan['window_opens']} .. {plan['window_closes']}",
            plan["booked_at"] or "-",
            plan["reason"],
        )
    console.print(table)
