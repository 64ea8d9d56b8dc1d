"""`make up` / `make down`: the whole stack on this machine, without Docker.

`up` starts the local Kafka and FerretDB (scripts.infra), then intake, scheduler and notifier
as child processes with the demo sites, waits until every `/readyz` answers 200, prints where
each listens and streams their logs. Like compose's `restart: unless-stopped`, a service that
dies after the stack came up is started again, after 1 s, then up to 30 s between attempts
while it keeps dying. Ctrl-C (or `make down` from another terminal) stops everything it
started: each service gets SIGTERM and drains its work in flight before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from scripts import infra

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PORTS = "8001,8002,8003"


def service_ports() -> dict[str, int]:
    """The services' ports: 8001-8003, or `CLINICFLOW_STACK_PORTS` (three, comma-separated)."""
    ports = [int(p) for p in os.environ.get("CLINICFLOW_STACK_PORTS", DEFAULT_PORTS).split(",")]
    return dict(zip(("intake", "scheduler", "notifier"), ports, strict=True))


def instance() -> infra.Instance:
    """The Kafka + FerretDB pair of this stack (default ports unless the environment says)."""
    env = os.environ.get
    return infra.Instance(
        name=env("CLINICFLOW_INFRA_NAME", "default"),
        kafka_port=int(env("CLINICFLOW_KAFKA_PORT", "9092")),
        controller_port=int(env("CLINICFLOW_CONTROLLER_PORT", "9093")),
        mongo_port=int(env("CLINICFLOW_MONGO_PORT", "27017")),
    )


READY_TIMEOUT_S = 90.0
DEMO_SITES = ["paris-01", "nyc-01"]


async def demo_keys(inst: infra.Instance) -> dict[str, str]:
    """One API key per role for the demo sites, kept across `make up` while still valid.

    Local only: the tokens sit in the instance folder (mode 600) so the README's curl examples
    keep working after a restart; a purged Kafka or a revoked key gets a fresh set.
    """
    from clinicflow_cli import keystore
    from shared.access import Role, new_key
    from shared.topics import Topics

    path = inst.root / "demo-keys.json"
    topics = Topics(os.environ.get("CLINICFLOW_TOPIC_PREFIX", "clinic."))
    known = await keystore.read_all(inst.bootstrap_servers, topics)
    saved: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    now = datetime.now(UTC)

    def still_valid(token: str) -> bool:
        record = known.get(token.removeprefix("cfk_")[:16])
        return record is not None and record.active(now)

    if set(saved) == {r.value for r in Role} and all(map(still_valid, saved.values())):
        return saved
    tokens = {}
    for role in Role:
        record, token = new_key(
            name=f"demo {role.value}", role=role, sites=DEMO_SITES, created_by="make up"
        )
        await keystore.publish(inst.bootstrap_servers, topics, record)
        tokens[role.value] = token
    path.write_text(json.dumps(tokens, indent=2))
    path.chmod(0o600)
    return tokens


def stack_pidfile(inst: infra.Instance) -> Path:
    return inst.root / "stack.pid"


def service_env(name: str, port: int, inst: infra.Instance) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": inst.bootstrap_servers,
        "MONGODB_URI": inst.mongodb_uri,
        "CLINICFLOW_HTTP_PORT": str(port),
        "CLINICFLOW_ENVIRONMENT": "local",
        "CLINICFLOW_SITES_FILE": str(REPO / "deploy" / "sites.demo.yaml"),
        "CLINICFLOW_LOCAL_KEY_FILE": str(infra.cache_dir() / "local-health.key"),
        "CLINICFLOW_WEBHOOKS_ALLOW_PRIVATE": "true",
        "PYTHONUNBUFFERED": "1",
    }


async def pump(name: str, stream: asyncio.StreamReader, logfile: Path) -> None:
    """Copy a service's output to the terminal, prefixed, and to its log file."""
    with logfile.open("ab") as log:
        while line := await stream.readline():
            log.write(line)
            log.flush()
            sys.stdout.write(f"{name:9}| {line.decode(errors='replace')}")
            sys.stdout.flush()


RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
STABLE_S = 10.0
"""A service that ran this long before dying is restarted after `RESTART_FIRST_S` again."""
STOP_GRACE_S = 30.0


class Supervised:
    """One service process, started again whenever it dies, until the stack stops."""

    def __init__(self, name: str, port: int, inst: infra.Instance, stopping: asyncio.Event):
        self.name, self.port, self.inst, self.stopping = name, port, inst, stopping
        self.proc: asyncio.subprocess.Process | None = None
        self.exits = 0
        self.restarting = asyncio.Event()

    async def start(self) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", f"services.{self.name}",
            cwd=REPO, env=service_env(self.name, self.port, self.inst),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self.proc = proc
        self.inst.pidfile(self.name).write_text(str(proc.pid))
        return proc

    async def run(self) -> None:
        """Run the service; once `restarting` is set (the stack is up), restart it when it dies."""
        delay = RESTART_FIRST_S
        while True:
            proc = await self.start()
            assert proc.stdout is not None
            logs = asyncio.create_task(pump(self.name, proc.stdout, self.inst.logfile(self.name)))
            started = time.monotonic()
            code = await proc.wait()
            await logs
            self.exits += 1
            if self.stopping.is_set() or not self.restarting.is_set():
                return
            delay = RESTART_FIRST_S if time.monotonic() - started > STABLE_S else delay
            print(f"{self.name} exited with code {code}; restarting in {delay:.0f}s", flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=delay)
            if self.stopping.is_set():
                return
            delay = min(delay * 2, RESTART_MAX_S)

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=STOP_GRACE_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def wait_ready(services: dict[str, Supervised]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(timeout=2) as client:
        for name, service in services.items():
            while True:
                if service.exits:
                    raise infra.InfraError(f"{name} exited during start (see its log above)")
                with contextlib.suppress(httpx.HTTPError):
                    url = f"http://127.0.0.1:{service.port}/readyz"
                    if (await client.get(url)).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise infra.InfraError(f"{name} was not ready after {READY_TIMEOUT_S:.0f}s")
                await asyncio.sleep(0.5)


async def run(inst: infra.Instance) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    keys = await demo_keys(inst)
    services = {
        name: Supervised(name, port, inst, stopping) for name, port in service_ports().items()
    }
    running = [asyncio.create_task(service.run()) for service in services.values()]
    try:
        ready = asyncio.create_task(wait_ready(services))
        stop_wait = asyncio.create_task(stopping.wait())
        await asyncio.wait({ready, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            ready.result()
            for service in services.values():
                service.restarting.set()
            print("\nclinicflow is up:")
            for name, port in service_ports().items():
                print(f"  {name:9} http://127.0.0.1:{port}   (API docs at /docs)")
            page = f"http://127.0.0.1:{service_ports()['scheduler']}/ops"
            print(f"  ops page  {page}   (asks for $CLINICFLOW_KEY_OPS)")
            print(f"  kafka     {inst.bootstrap_servers}")
            print(f"  mongodb   {inst.mongodb_uri}  (FerretDB)")
            print("Demo API keys for paris-01 and nyc-01 (send `Authorization: Bearer <key>`):")
            for role, token in keys.items():
                print(f"  export CLINICFLOW_KEY_{role.upper()}={token}")
            print("A service that dies is restarted. Ctrl-C or `make down` stops everything.\n",
                  flush=True)  # fmt: skip
            await stop_wait
        else:
            ready.cancel()
    finally:
        stopping.set()
        await asyncio.gather(*(service.stop() for service in services.values()))
        await asyncio.gather(*running, return_exceptions=True)
        for name in services:
            inst.pidfile(name).unlink(missing_ok=True)


def up(inst: infra.Instance) -> int:
    pidfile = stack_pidfile(inst)
    running = infra.running_pid(pidfile)
    if running is not None:
        ports = ", ".join(str(p) for p in service_ports().values())
        print(
            f"clinicflow is already running (pid {running}); "
            f"its services listen on ports {ports}. Run `make down` to stop it first.",
            file=sys.stderr,
        )
        return 1
    for name, port in service_ports().items():
        if infra.port_open(port):
            print(f"error: port {port} for {name} is already taken by another process.")
            return 2
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(str(os.getpid()))
    try:
        infra.up(inst)
        asyncio.run(run(inst))
    except infra.InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        infra.down(inst)
        pidfile.unlink(missing_ok=True)
        print("clinicflow stopped.")
    return 0


def down(inst: infra.Instance) -> int:
    pid = infra.running_pid(stack_pidfile(inst))
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while infra.running_pid(stack_pidfile(inst)) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
    for name in service_ports():
        leftover = infra.running_pid(inst.pidfile(name))
        if leftover is not None:
            infra.stop_pid(leftover)
        inst.pidfile(name).unlink(missing_ok=True)
    infra.down(inst)
    stack_pidfile(inst).unlink(missing_ok=True)
    print("clinicflow stopped.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down"])
    args = parser.parse_args(argv)
    inst = instance()
    return up(inst) if args.command == "up" else down(inst)


if __name__ == "__main__":
    sys.exit(main())
