"""Real local Kafka (KRaft) and FerretDB, without Docker.

The machines we develop and test on have no Docker engine, so this module fetches the Apache
Kafka jars from Maven Central and builds FerretDB with `go install`, caches both outside git,
and runs them as background processes on 127.0.0.1. It is hand-written because no packaged tool
does this for a jar-only Kafka and a Go-built FerretDB; it uses only the standard library plus
the project's own Kafka and MongoDB clients for the readiness round trips.

    python -m scripts.infra up | down | status   [--name NAME] [--kafka-port N] [--mongo-port N]
    python -m scripts.infra promtool             (builds it once; prints its path)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

KAFKA_VERSION = "4.1.1"
FERRETDB_VERSION = "v1.24.2"
FERRETDB_MODULE = "github.com/FerretDB/FerretDB/cmd/ferretdb"
FERRETDB_ID_INDEX_PATCH = (
    "internal/backends/sqlite/metadata/metadata.go",
    "IDColumn = DefaultColumn + \"->'$._id'\"",
    """IDColumn = DefaultColumn + `->"_id"`""",
)
"""FerretDB v1's SQLite backend looks documents up by `_ferretdb_sjson->'$._id'` while its unique
index is on `_ferretdb_sjson->"_id"`: the same value, but SQLite matches an index by expression,
so every read, update and delete by `_id` scanned the whole table. Spelling the lookup like the
index makes them index searches (docs/adr/0009)."""
PROMTOOL_VERSION = "v0.316.0"
PROMTOOL_MODULE = "github.com/prometheus/prometheus/cmd/promtool"
"""Prometheus 3.16's `promtool`, which checks `deploy/prometheus/` (the Go module's v0.3XX.Y
versions are Prometheus 3.XX.Y releases)."""
POM = Path(__file__).with_name("kafka") / "pom.xml"
READY_TIMEOUT_S = 120.0


class InfraError(RuntimeError):
    """A problem the user can act on; printed as one line, without a traceback."""


def cache_dir() -> Path:
    """The cache folder (`CLINICFLOW_CACHE_DIR`), created on first use: a fresh machine has none."""
    path = Path(os.environ.get("CLINICFLOW_CACHE_DIR", Path.home() / ".cache" / "clinicflow"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Instance:
    """One named pair of Kafka + FerretDB processes with its own ports and data directories."""

    name: str = "default"
    kafka_port: int = 9092
    controller_port: int = 9093
    mongo_port: int = 27017
    root: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = cache_dir() / "run" / self.name

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def mongodb_uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}/"

    def pidfile(self, component: str) -> Path:
        return self.root / f"{component}.pid"

    def logfile(self, component: str) -> Path:
        return self.root / f"{component}.log"


def require_tool(command: str, what: str) -> str:
    path = shutil.which(command)
    if path is None:
        raise InfraError(f"'{command}' was not found: install {what} (needed for the local stack).")
    return path


def kafka_libs() -> Path:
    """The folder of Kafka jars, resolved with Maven once and cached."""
    target = cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"
    if (target / ".complete").exists():
        return target
    require_tool("java", "a Java 17+ runtime, e.g. `apt-get install openjdk-17-jdk-headless`")
    mvn = require_tool("mvn", "Apache Maven, e.g. `apt-get install maven`")
    print(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central (once)...", flush=True)
    staging = Path(tempfile.mkdtemp(prefix="kafka-libs-", dir=cache_dir()))
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
         f"-Dkafka.version={KAFKA_VERSION}", f"-DoutputDirectory={staging}",
         "-DincludeScope=runtime"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise InfraError(f"Maven could not fetch the Kafka jars:\n{result.stdout}{result.stderr}")
    (staging / ".complete").touch()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def ferretdb_binary() -> Path:
    """The FerretDB v1 binary, built from its Go module once and cached.

    A plain `go install` binary panics at start because the module ships an empty
    `build/version/version.txt` (FerretDB's own build writes it), so we fetch the module with the
    Go toolchain, copy it, write that file, and `go build` the command from the copy.
    """
    binary = cache_dir() / "bin" / f"ferretdb-{FERRETDB_VERSION}-id-index"
    if binary.exists():
        return binary
    go = require_tool("go", "Go 1.24+, e.g. `apt-get install golang` or the go.dev tarball")
    print(f"building FerretDB {FERRETDB_VERSION} from its Go module (once)...", flush=True)
    module = FERRETDB_MODULE.removesuffix("/cmd/ferretdb")
    download = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{FERRETDB_VERSION}"],
        capture_output=True, text=True, check=False, cwd=tempfile.gettempdir(),
    )  # fmt: skip
    if download.returncode != 0:
        raise InfraError(f"go could not download FerretDB:\n{download.stdout}{download.stderr}")
    source = Path(json.loads(download.stdout)["Dir"])
    with tempfile.TemporaryDirectory(prefix="ferretdb-src-", dir=cache_dir()) as work:
        tree = Path(work) / "src"
        shutil.copytree(source, tree)
        for path in tree.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        (tree / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
        patch_id_lookup(tree)
        staged = Path(work) / "ferretdb"
        build = subprocess.run(
            [go, "build", "-trimpath", "-o", str(staged), "./cmd/ferretdb"],
            cwd=tree, env={**os.environ, "CGO_ENABLED": "0"},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if build.returncode != 0:
            raise InfraError(f"building FerretDB failed:\n{build.stdout}{build.stderr}")
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staged, binary)
    return binary


def promtool_binary() -> Path:
    """`promtool`, built from its Go module once and cached (a plain `go install` works).

    Built without the service-discovery plugins (`remove_all_sd`: cloud SDKs, Kubernetes),
    which our static scrape targets do not use: far less to download and compile.
    """
    binary = cache_dir() / "bin" / f"promtool-{PROMTOOL_VERSION}-static-sd"
    if binary.exists():
        return binary
    go = require_tool("go", "Go 1.24+, e.g. `apt-get install golang` or the go.dev tarball")
    print(f"building promtool {PROMTOOL_VERSION} from its Go module (once)...", flush=True)
    with tempfile.TemporaryDirectory(prefix="promtool-", dir=cache_dir()) as work:
        build = subprocess.run(
            [go, "install", "-trimpath", "-tags", "remove_all_sd",
             f"{PROMTOOL_MODULE}@{PROMTOOL_VERSION}"],
            cwd=work, env={**os.environ, "CGO_ENABLED": "0", "GOBIN": work},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if build.returncode != 0:
            raise InfraError(f"building promtool failed:\n{build.stdout}{build.stderr}")
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(Path(work) / "promtool", binary)
    return binary


def patch_id_lookup(tree: Path) -> None:
    """Apply `FERRETDB_ID_INDEX_PATCH` to a copy of FerretDB's source; fail loudly if the line
    moved (a new FerretDB version needs the patch looked at again)."""
    relative, before, after = FERRETDB_ID_INDEX_PATCH
    source = tree / relative
    text = source.read_text()
    if text.count(before) != 1:
        raise InfraError(f"FerretDB {FERRETDB_VERSION}: {relative} no longer holds {before!r}")
    source.write_text(text.replace(before, after))


def install() -> None:
    """Fetch and build everything `up` needs, without starting anything (CI's cache step)."""
    require_tool("java", "a Java 17+ runtime, e.g. `apt-get install openjdk-17-jdk-headless`")
    kafka_libs()
    ferretdb_binary()


def running_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(args: list[str], inst: Instance, component: str) -> int:
    inst.root.mkdir(parents=True, exist_ok=True)
    with inst.logfile(component).open("ab") as log:
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=inst.root,
        )  # fmt: skip
    inst.pidfile(component).write_text(str(proc.pid))
    return proc.pid


KAFKA_LOG4J = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaServer
        level: INFO
"""


def start_kafka(inst: Instance) -> None:
    libs = kafka_libs()
    java = require_tool(
        "java", "a Java 17+ runtime, e.g. `apt-get install openjdk-17-jdk-headless`"
    )
    data = inst.root / "kafka-data"
    props = inst.root / "server.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{inst.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{inst.kafka_port},"
                f"CONTROLLER://127.0.0.1:{inst.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{inst.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={data}",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=6",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "log.cleaner.backoff.ms=1000",
                "",
            ]
        )
    )
    log4j = inst.root / "log4j2.yaml"
    log4j.write_text(KAFKA_LOG4J)
    classpath = f"{libs}/*"
    jvm = [java, "-Xms256m", "-Xmx512m", f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
    if not (data / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            [*jvm, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
             f"--config={props}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise InfraError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")
    spawn([*jvm, "kafka.Kafka", str(props)], inst, "kafka")


def start_ferretdb(inst: Instance) -> None:
    binary = ferretdb_binary()
    data = inst.root / "ferretdb-data"
    state = inst.root / "ferretdb-state"
    data.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    spawn(
        [str(binary), "--handler=sqlite", f"--sqlite-url=file:{data}/",
         f"--listen-addr=127.0.0.1:{inst.mongo_port}", "--telemetry=disable",
         f"--state-dir={state}", "--log-level=warn", "--debug-addr=-"],
        inst, "ferretdb",
    )  # fmt: skip


async def kafka_round_trip(bootstrap: str) -> None:
    """Produce one record and read it back: proof that the broker serves clients."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    topic = "clinicflow.infra-check"
    marker = uuid.uuid4().bytes
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await producer.start()
        meta = await producer.send_and_wait(topic, marker)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        await consumer.start()
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        records = await consumer.getmany(tp, timeout_ms=5000)
        if not any(r.value == marker for r in records.get(tp, [])):
            raise InfraError("Kafka accepted a record but did not return it")
    finally:
        await consumer.stop()


def mongo_ping(uri: str) -> None:
    from pymongo import MongoClient

    client: MongoClient[dict[str, object]]
    with MongoClient(uri, serverSelectionTimeoutMS=2000) as client:
        client.admin.command("ping")


def kafka_check(inst: Instance) -> None:
    if not port_open(inst.kafka_port):
        raise InfraError("Kafka is not listening yet")
    asyncio.run(kafka_round_trip(inst.bootstrap_servers))


def wait_ready(inst: Instance) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_error: Exception | None = None
    checks: tuple[tuple[str, Callable[[], None]], ...] = (
        ("ferretdb", lambda: mongo_ping(inst.mongodb_uri)),
        ("kafka", lambda: kafka_check(inst)),
    )
    for component, check in checks:
        while True:
            if running_pid(inst.pidfile(component)) is None:
                tail = inst.logfile(component).read_text(errors="replace")[-2000:]
                raise InfraError(f"{component} exited during start; end of its log:\n{tail}")
            try:
                check()
                break
            except Exception as exc:
                last_error = exc
            if time.monotonic() > deadline:
                raise InfraError(f"{component} did not become ready in time: {last_error}")
            time.sleep(0.5)


def up(inst: Instance) -> None:
    """Start whatever of the pair is not running yet and wait until both serve clients."""
    install()
    inst.root.mkdir(parents=True, exist_ok=True)
    for component, port, start in (
        ("ferretdb", inst.mongo_port, start_ferretdb),
        ("kafka", inst.kafka_port, start_kafka),
    ):
        if running_pid(inst.pidfile(component)) is not None:
            continue
        if port_open(port):
            raise InfraError(
                f"port {port} is already taken by a process this script did not start; "
                f"stop it or choose another port for {component}"
            )
        start(inst)
    wait_ready(inst)


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process (its whole group when it leads one), SIGKILL after the timeout."""

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    send(signal.SIGKILL)


def down(inst: Instance, *, purge: bool = False) -> None:
    """Stop only the processes this script started (found by pid file)."""
    for component in ("kafka", "ferretdb"):
        pid = running_pid(inst.pidfile(component))
        if pid is not None:
            stop_pid(pid)
        inst.pidfile(component).unlink(missing_ok=True)
    if purge:
        shutil.rmtree(inst.root, ignore_errors=True)


def status(inst: Instance) -> dict[str, int | None]:
    return {c: running_pid(inst.pidfile(c)) for c in ("kafka", "ferretdb")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.infra", description=__doc__)
    parser.add_argument("command", choices=["install", "promtool", "up", "down", "status"])
    parser.add_argument("--name", default=os.environ.get("CLINICFLOW_INFRA_NAME", "default"))
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--controller-port", type=int, default=9093)
    parser.add_argument("--mongo-port", type=int, default=27017)
    parser.add_argument("--purge", action="store_true", help="with down: delete the data too")
    args = parser.parse_args(argv)
    inst = Instance(args.name, args.kafka_port, args.controller_port, args.mongo_port)
    try:
        if args.command == "install":
            install()
        elif args.command == "promtool":
            print(promtool_binary())
        elif args.command == "up":
            up(inst)
            print(f"kafka    {inst.bootstrap_servers}  (log {inst.logfile('kafka')})")
            print(f"mongodb  {inst.mongodb_uri}  (FerretDB, log {inst.logfile('ferretdb')})")
        elif args.command == "down":
            down(inst, purge=args.purge)
            print("local Kafka and FerretDB stopped")
        else:
            for component, pid in status(inst).items():
                print(f"{component:9} {'running, pid ' + str(pid) if pid else 'stopped'}")
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
