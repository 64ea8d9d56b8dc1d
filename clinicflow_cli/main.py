"""`clinicflow`, the ops CLI: `keys create|list|revoke`, API keys for the three services (SPEC
section 6), here; `status`, `stalled`, `trace` and `dlq` in `clinicflow_cli.commands`.

Talks to Kafka as the services do (`KAFKA_BOOTSTRAP_SERVERS`, `CLINICFLOW_TOPIC_PREFIX`). A new
key is printed once, as the last line of `create`; only its SHA-256 is published.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from clinicflow_cli import commands, keystore
from clinicflow_cli.config import CliSettings
from shared.access import ALL_SITES, Role, new_key
from shared.topics import Topics

app = typer.Typer(
    help="clinicflow operations.", no_args_is_help=True, pretty_exceptions_show_locals=False
)
keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.command("status")(commands.status_command)
app.command("stalled")(commands.stalled_command)
app.command("trace")(commands.trace_command)
app.add_typer(commands.dlq_app, name="dlq")
console = Console()


def _where() -> tuple[str, Topics]:
    settings = CliSettings()
    return settings.kafka_bootstrap_servers, settings.topics


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except OSError:
        return "cli"


@keys_app.command("create")
def create(
    role: Annotated[Role, typer.Option(help="What the key may do.")],
    site: Annotated[list[str], typer.Option(help="A site it covers; repeat; `*` for all.")],
    name: Annotated[str, typer.Option(help="Who or what holds it, e.g. `paris front desk`.")],
    expires_in_days: Annotated[
        int | None, typer.Option(min=1, help="Refuse the key after this many days.")
    ] = None,
) -> None:
    """Create a key and print it once (last line); only its hash is stored."""
    bootstrap, topics = _where()
    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    sites = [s.strip() for s in site if s.strip()]
    try:
        record, token = new_key(
            name=name, role=role, sites=sites, created_by=_operator(), expires_at=expires
        )
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        console.print(f"[red]invalid {fields}: sites are ids like paris-01, or *[/red]")
        raise typer.Exit(2) from exc
    asyncio.run(keystore.publish(bootstrap, topics, record))
    console.print(
        f"created key {record.key_id} ({record.role.value} at {', '.join(record.sites)}); "
        "it is shown once:"
    )
    print(token)


@keys_app.command("list")
def list_keys(
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON list instead of a table.")
    ] = False,
) -> None:
    """Every key, revoked ones included (never the secrets)."""
    bootstrap, topics = _where()
    records = sorted(
        asyncio.run(keystore.read_all(bootstrap, topics)).values(), key=lambda k: k.created_at
    )
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "key_id": k.key_id,
                        "name": k.name,
                        "role": k.role.value,
                        "sites": k.sites,
                        "revoked": k.revoked,
                        "created_at": k.created_at.isoformat(),
                        "expires_at": k.expires_at.isoformat() if k.expires_at else None,
                    }
                    for k in records
                ],
                indent=2,
            )
        )
        return
    table = Table("key_id", "name", "role", "sites", "state", "created")
    now = datetime.now(UTC)
    for k in records:
        state = "revoked" if k.revoked else ("active" if k.active(now) else "expired")
        sites = "all sites" if ALL_SITES in k.sites else ", ".join(k.sites)
        table.add_row(k.key_id, k.name, k.role.value, sites, state, k.created_at.date().isoformat())
    console.print(table)


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key id `list` shows.")]) -> None:
    """Revoke a key: every service refuses it within seconds."""
    bootstrap, topics = _where()
    current = asyncio.run(keystore.read_all(bootstrap, topics)).get(key_id)
    if current is None:
        console.print(f"[red]no key {key_id}[/red]")
        raise typer.Exit(2)
    if current.revoked:
        console.print(f"key {key_id} was already revoked")
        return
    revoked = current.model_copy(
        update={"revoked": True, "revoked_at": datetime.now(UTC), "revoked_by": _operator()}
    )
    asyncio.run(keystore.publish(bootstrap, topics, revoked))
    console.print(f"revoked key {key_id}")


def main() -> None:
    app()
