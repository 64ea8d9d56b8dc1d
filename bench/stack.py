"""The stack the benchmarks drive: a private one on ports of its own, or one already running.

A private run owns the infra instance "bench" (Kafka 29092/29093, FerretDB 27217, services
28001-28003) and purges it at start, so every run starts from empty storage. Each phase gets
fresh service processes with a topic prefix and databases of its own: a backlog one phase leaves
behind (the scheduler still booking) cannot slow the next one down.

Every process started here has a pid file in the instance folder, so a run killed outright is
cleaned up by the next one; a normal end or Ctrl-C stops them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

from bench.load import screening
from clinicflow_cli import keystore
from scripts import infra
from scripts import stack as make_up
from shared.access import Role, new_key
from shared.topics import Topics

REPO = Path(__file__).resolve().parent.parent
BENCH = infra.Instance(name="bench", kafka_port=29092, controller_port=29093, mongo_port=27217)
PORTS = {"intake": 28001, "scheduler": 28002, "notifier": 28003}
SERVICES = tuple(PORTS)
READY_TIMEOUT_S = 90.0
RATE_LIMIT = "100000/second"
"""One key drives all the load: the default 600/minute would measure the limiter instead."""


class Child:
    """A process this run started, with its pid file and its log."""

    def __init__(self, proc: asyncio.subprocess.Process, pidfile: Path, log: Path) -> None:
        self.proc = proc
        self.pidfile = pidfile
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait(self, within: float) -> int | None:
        """The exit code, or None while it still runs after `within` seconds."""
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.proc.wait(), within)
        return None

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            if await self.wait(15) is None:
                self.proc.kill()
                await self.proc.wait()
        self.pidfile.unlink(missing_ok=True)


def rss_kb(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def runs_our_code(pid: int) -> bool:
    """Whether `pid` still runs a service or bench module (a pid may have been reused)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"\0-m\0services." in command or b"\0-m\0bench." in command


def stop_leftovers(workdir: Path) -> None:
    """Stop what a killed run left behind, found by its pid files."""
    for pidfile in workdir.glob("*.pid"):
        if pidfile.stem in ("kafka", "ferretdb"):  # scripts.infra stops those
            continue
        pid = infra.running_pid(pidfile)
        if pid is not None and runs_our_code(pid):
            infra.stop_pid(pid)
        pidfile.unlink(missing_ok=True)


def start_private() -> None:
    """Purge the bench instance and start its Kafka and FerretDB (blocking, before the loop)."""
    stop_leftovers(BENCH.root)
    infra.down(BENCH, purge=True)
    for name, port in PORTS.items():
        if infra.port_open(port):
            raise infra.InfraError(f"port {port} for the bench {name} is taken by another process")
    infra.up(BENCH)


async def issue_key(kafka: str, prefix: str, expires_at: datetime | None = None) -> str:
    """A front-desk key for the demo sites, published where the services read keys."""
    record, token = new_key(
        name="bench front desk",
        role=Role.FRONT_DESK,
        sites=make_up.DEMO_SITES,
        created_by="python -m bench",
        expires_at=expires_at,
    )
    await keystore.publish(kafka, Topics(prefix), record)
    return token


async def until_ok(url: str, child: Child | None, within: float = READY_TIMEOUT_S) -> None:
    """Poll `url` until it answers 200; fail early when `child` exited."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if child is not None and child.proc.returncode is not None:
                tail = child.log.read_text(errors="replace")[-1500:]
                raise infra.InfraError(f"{url} exited during start; end of its log:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.3)
    raise infra.InfraError(f"{url} did not answer 200 within {within:.0f}s")


@dataclass
class Stack:
    """The services of one phase: where they listen, their topic prefix and a front-desk key.

    `children` is None for a stack this run did not start (`--use-running`): it cannot be
    stopped or restarted, so benchmarks that need that skip themselves.
    """

    bench: Bench
    phase: str
    prefix: str
    token: str
    ports: dict[str, int]
    children: dict[str, Child] | None
    running_pids: dict[str, int] = field(default_factory=dict)

    @property
    def intake_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['intake']}"

    @property
    def pids(self) -> dict[str, int]:
        if self.children is None:
            return self.running_pids
        return {name: child.pid for name, child in self.children.items()}

    async def start(self, name: str) -> None:
        """Start one service of this phase and wait until its `/readyz` answers 200."""
        if self.children is None:
            raise RuntimeError("a running stack is not restarted by the benchmarks")
        env = {
            **make_up.service_env(name, self.ports[name], BENCH),
            **self.bench.secrets,
            "CLINICFLOW_TOPIC_PREFIX": self.prefix,
            "MONGODB_DATABASE": f"bench_{self.phase.replace('-', '_')}_{name}",
            "CLINICFLOW_RATE_LIMIT": RATE_LIMIT,
        }
        child = await self.bench.spawn(
            name, [sys.executable, "-m", f"services.{name}"], env, log=f"{self.phase}.{name}"
        )
        self.children[name] = child
        await until_ok(f"http://127.0.0.1:{self.ports[name]}/readyz", child)

    async def stop(self, name: str) -> None:
        if self.children is None:
            raise RuntimeError("a running stack is not stopped by the benchmarks")
        self.bench.sample_rss({name: self.children[name].pid})
        await self.children.pop(name).stop()

    async def accepting(self, within: float = 60.0) -> None:
        """Wait until intake takes a screening: it knows the key and the sites (probe included)."""
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.intake_url, timeout=10) as http:
            while True:
                answer = await http.post(
                    "/v1/screenings",
                    json=screening(-1),
                    headers={"Authorization": f"Bearer {self.token}"},
                )
                if answer.status_code == 201:
                    return
                if time.monotonic() > deadline:
                    raise infra.InfraError(
                        f"intake still answers {answer.status_code}: {answer.text}"
                    )
                await asyncio.sleep(0.5)


@dataclass
class Bench:
    """What every benchmark gets: the infrastructure, the services, and the run's settings."""

    quick: bool
    kafka: str
    mongodb_uri: str
    workdir: Path = BENCH.root
    running: Stack | None = None
    rss_kb: dict[str, int] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    secrets: dict[str, str] = field(
        default_factory=lambda: {
            "CLINICFLOW_HEALTH_KEY": Fernet.generate_key().decode(),
            "CLINICFLOW_ID_SECRET": os.urandom(32).hex(),
        }
    )

    @property
    def private(self) -> bool:
        return self.running is None

    async def spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None, *, log: str = ""
    ) -> Child:
        self.workdir.mkdir(parents=True, exist_ok=True)
        logfile = self.workdir / f"{log or name}.log"
        with logfile.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *args, cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        pidfile = self.workdir / f"{name}.pid"
        pidfile.write_text(str(proc.pid))
        child = Child(proc, pidfile, logfile)
        self.children.append(child)
        return child

    async def close(self) -> None:
        """Stop every process still running (all of them after an interruption)."""
        for child in self.children:
            await child.stop()

    async def run_load(
        self, args: list[str], within: float, token: str | None = None
    ) -> dict[str, Any]:
        """Run `python -m bench.load` with `args` and return the figures it wrote."""
        out = self.workdir / "load.json"
        out.unlink(missing_ok=True)
        command = [sys.executable, "-m", "bench.load", *args, "--out", str(out)]
        child = await self.spawn("load", command, {"BENCH_TOKEN": token} if token else None)
        try:
            code = await child.wait(within)
        finally:
            await child.stop()
        if code != 0:
            raise RuntimeError(f"the load generator failed (exit {code}); see {child.log}")
        figures: dict[str, Any] = json.loads(out.read_text())
        return figures

    def sample_rss(self, pids: dict[str, int]) -> None:
        """Keep the largest VmRSS seen per service."""
        for name, pid in pids.items():
            if (kb := rss_kb(pid)) is not None:
                self.rss_kb[name] = max(kb, self.rss_kb.get(name, 0))

    @contextlib.asynccontextmanager
    async def services(self, phase: str, names: Sequence[str] = SERVICES) -> AsyncIterator[Stack]:
        """Fresh services for `phase` (the running stack with `--use-running`), stopped after."""
        if self.running is not None:
            try:
                yield self.running
            finally:
                self.sample_rss(self.running.pids)
            return
        prefix = f"bench-{phase}."
        token = await issue_key(self.kafka, prefix)
        stack = Stack(self, phase, prefix, token, PORTS, children={})
        try:
            await asyncio.gather(*(stack.start(name) for name in names))
            if "intake" in names:
                await stack.accepting()
            yield stack
        finally:
            for name in list(stack.children or ()):
                await stack.stop(name)


async def attach_running(quick: bool) -> Bench:
    """A Bench over the stack `make up` runs (ports and instance from the same environment)."""
    inst = make_up.instance()
    ports = make_up.service_ports()
    bench = Bench(quick, inst.bootstrap_servers, inst.mongodb_uri)
    await until_ok(f"http://127.0.0.1:{ports['intake']}/readyz", None, within=5)
    prefix = os.environ.get("CLINICFLOW_TOPIC_PREFIX", "clinic.")
    expires = datetime.now(UTC) + timedelta(hours=3)
    token = await issue_key(inst.bootstrap_servers, prefix, expires)
    pids = {n: pid for n in ports if (pid := infra.running_pid(inst.pidfile(n))) is not None}
    bench.running = Stack(bench, "running", prefix, token, ports, None, pids)
    await bench.running.accepting()
    return bench
