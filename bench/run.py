"""`python -m bench` (`make bench`): every benchmark, one table, and `bench/results.json`.

Without `--use-running` it starts a private stack from empty storage (`bench.stack`) and stops
all of it at the end, Ctrl-C included. Every baseline runs in the same invocation on the same
box, so ratios hold even on a noisy machine. Benchmarks print figures; none fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, cast

from pymongo import AsyncMongoClient

from bench import drain, latency, memory, report, rules, throughput
from bench.report import HotpathContext, Hotpaths, Row, Section
from bench.stack import BENCH, Bench, attach_running, start_private, stop_leftovers
from scripts import infra

HOTPATHS = "bench.hotpaths"
HOTPATH_DATABASE = "bench_hotpaths"


async def hotpaths(bench: Bench) -> Section:
    """Per-hot-path rows from `bench/hotpaths.py` when it exists (see `bench.report`)."""
    if importlib.util.find_spec(HOTPATHS) is None:
        row = Row("hot paths at 1k and 100k documents", "not measured: no bench/hotpaths.py")
        return Section("hotpaths", [row])
    module = cast(Hotpaths, importlib.import_module(HOTPATHS))
    context = HotpathContext(
        mongodb_uri=bench.mongodb_uri,
        kafka_bootstrap_servers=bench.kafka,
        topic_prefix="bench-hotpaths.",
        scratch_database=HOTPATH_DATABASE,
        quick=bench.quick,
    )
    try:
        rows = await module.run(context)
    finally:
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(bench.mongodb_uri)
        await mongo.drop_database(HOTPATH_DATABASE)
        await mongo.close()
    return Section("hotpaths", rows)


BENCHMARKS: dict[str, Callable[[Bench], Awaitable[Section]]] = {
    "throughput": throughput.run,
    "drain": drain.run,
    "latency": latency.run,
    "hotpaths": hotpaths,
    "rss": memory.run,  # last: it reports what the phases before it left behind
}
NAMES = ("rules", *BENCHMARKS)


async def run_all(names: list[str], bench: Bench | None) -> list[Section]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    sections = []
    try:
        for name in names:
            print(f"\n== {name}", flush=True)
            if name == "rules":
                sections.append(Section("rules", [], rules.main()))
                continue
            assert bench is not None
            try:
                section = await BENCHMARKS[name](bench)
            except Exception as exc:
                print(f"{name} failed: {exc}", file=sys.stderr)
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                section = Section(name, [Row(name, f"failed: {type(exc).__name__} {first_line}")])
            for row in section.rows:
                print(f"  {row.what}: {row.value}  [baseline {row.baseline}]", flush=True)
            sections.append(section)
    finally:
        if bench is not None:
            await bench.close()
    return sections


async def start(names: list[str], args: argparse.Namespace) -> list[Section]:
    if names == ["rules"]:
        return await run_all(names, None)
    if args.use_running:
        return await run_all(names, await attach_running(args.quick))
    return await run_all(names, Bench(args.quick, BENCH.bootstrap_servers, BENCH.mongodb_uri))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--only", choices=NAMES, help="run this benchmark only")
    parser.add_argument(
        "--use-running",
        action="store_true",
        help="use the stack `make up` runs (same CLINICFLOW_* variables) instead of a private "
        "one; start it with CLINICFLOW_RATE_LIMIT=100000/second or 429s count as failures",
    )
    return parser.parse_args(argv)


def interrupt(*_: object) -> None:
    """SIGTERM outside the event loop (starting or stopping Kafka and FerretDB): like Ctrl-C."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    names = [args.only] if args.only else list(NAMES)
    private = names != ["rules"] and not args.use_running
    host = report.machine()
    signal.signal(signal.SIGTERM, interrupt)
    try:
        if private:
            print(f"starting the bench stack from empty storage in {BENCH.root} ...", flush=True)
            start_private()
        sections = asyncio.run(start(names, args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted: stopping what the benchmark started", file=sys.stderr)
        return 130
    except infra.InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # another Ctrl-C must not leave processes
            signal.signal(sig, signal.SIG_IGN)
        stop_leftovers(BENCH.root)
        if private:
            infra.down(BENCH)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    rows = [row for section in sections for row in section.rows]
    print("\n" + report.markdown(rows))
    path = report.write(sections, quick=args.quick, host=host)
    print(f"\nfigures and machine: {path}")
    return 0
