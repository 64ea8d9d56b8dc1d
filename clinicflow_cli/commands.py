"""`clinicflow status|stalled|trace|dlq`: the ops commands of SPEC section 9.

Each prints tables by default and JSON with `--json`, and never a health answer, a screening
reason, a contact detail or an aftercare text: only ids, codes, counts and instants.
`status` exits 1 when something is unhealthy (see its help); any command exits 2 on a usage
error such as an unknown topic, and 3 when what it needs (the scheduler, Kafka) does not answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import typer
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from clinicflow_cli import dlq, status, trace
from clinicflow_cli.config import CliSettings

console = Console()
errors = Console(stderr=True)
dlq_app = typer.Typer(help="Dead letters: list, show, replay.", no_args_is_help=True)
AsJson = Annotated[bool, typer.Option("--json", help="JSON instead of tables.")]
UNHEALTHY = 1
UNAVAILABLE = 3
T = TypeVar("T")


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run against Kafka; one line and exit 3, not a traceback, when Kafka does not answer."""
    try:
        return asyncio.run(work)
    except (KafkaError, OSError) as exc:
        errors.print(f"[red]Kafka did not answer: {type(exc).__name__}[/red]")
        raise typer.Exit(UNAVAILABLE) from exc


def _print_json(found: Any) -> None:
    print(json.dumps(found, indent=2, default=str))


def _dlq_topic(settings: CliSettings, topic: str) -> str:
    try:
        return dlq.resolve(settings.topics, topic)
    except dlq.UnknownTopic as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


def status_command(
    as_json: AsJson = False,
    max_lag: Annotated[
        int, typer.Option(min=0, help="Records a group may be behind on a topic and be healthy.")
    ] = 1000,
) -> None:
    """Readiness, outbox backlog and due aftercare of each service; consumer lag and DLQ depth.

    Exits 1 when something is unhealthy: a service down or not ready, its ops status
    unreadable, a dead letter in any `.dlq` topic or an outbox, a disabled webhook
    subscription, Kafka unreachable, or a group more than --max-lag records behind on a topic.
    """
    found = asyncio.run(status.gather(CliSettings(), max_lag=max_lag))
    if as_json:
        _print_json(found)
    else:
        status.render(found, console)
    if not found["healthy"]:
        raise typer.Exit(UNHEALTHY)


def stalled_command(as_json: AsJson = False) -> None:
    """Plans whose next session is not booked inside its window (from the scheduler)."""
    try:
        plans = asyncio.run(status.stalled(CliSettings()))
    except status.Unanswered as exc:
        errors.print(f"[red]the scheduler's stalled plans: {exc}[/red]")
        raise typer.Exit(UNAVAILABLE) from exc
    if as_json:
        _print_json(plans)
    else:
        status.render_stalled(plans, console)


def trace_command(
    client_id: Annotated[str, typer.Argument(help="The client whose workflow to follow.")],
    as_json: AsJson = False,
) -> None:
    """The client's workflow events in causal order, then time: ids and codes only."""
    settings = CliSettings()
    events = _run(trace.trace(settings.kafka_bootstrap_servers, settings.topics, client_id))
    if as_json:
        _print_json(events)
    else:
        trace.render(client_id, events, console)


@dlq_app.command("list")
def dlq_list(
    topic: Annotated[str, typer.Argument(help="e.g. screening_passed (prefix optional).")],
    as_json: AsJson = False,
) -> None:
    """The dead letters of `<TOPIC>.dlq`: where each came from, its event id and the error."""
    settings = CliSettings()
    name = _dlq_topic(settings, topic)
    records = _run(dlq.letters(settings.kafka_bootstrap_servers, name))
    found = [dlq.letter(record) for record in records]
    if as_json:
        _print_json(found)
    else:
        dlq.render_list(name, found, console)


@dlq_app.command("show")
def dlq_show(
    topic: Annotated[str, typer.Argument(help="e.g. screening_passed (prefix optional).")],
    offset: Annotated[int, typer.Argument(min=0, help="The letter's offset in its partition.")],
    partition: Annotated[int, typer.Option(min=0, help="The letter's partition.")] = 0,
    as_json: AsJson = False,
) -> None:
    """One dead letter: its headers and its envelope's ids and type (never its data)."""
    settings = CliSettings()
    name = _dlq_topic(settings, topic)
    found = _run(dlq.show(settings.kafka_bootstrap_servers, name, partition, offset))
    if found is None:
        errors.print(f"[red]no dead letter at {name} partition {partition} offset {offset}[/red]")
        raise typer.Exit(2)
    if as_json:
        _print_json(found)
    else:
        dlq.render_show(found, console)


@dlq_app.command("replay")
def dlq_replay(
    topic: Annotated[str, typer.Argument(help="e.g. screening_passed (prefix optional).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be replayed; publish nothing.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Republish the letters not replayed yet to their topic, with their original event ids
    (idempotent consumers skip what they did already); stand-in letters are skipped."""
    settings = CliSettings()
    name = _dlq_topic(settings, topic)
    with Progress(
        TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), console=errors,
        disable=as_json,
    ) as bar:  # fmt: skip
        task = bar.add_task("replay", total=None)
        found = _run(
            dlq.replay(
                settings.kafka_bootstrap_servers,
                settings.topics,
                name,
                dry_run=dry_run,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        )
    if as_json:
        _print_json(found)
    else:
        dlq.render_replay(found, console)
