"""Benchmark 1: intake's `POST /v1/screenings` with 16 concurrent connections.

The same load generator then drives two baselines on the same box (`bench.baseline_app`): (a)
a bare FastAPI app with intake's command model, (b) the same plus one `insert_one` into the same
FerretDB. Intake does more than (b) (screening, encryption, an outbox, Kafka), so the target is
half of (b); the ratio to (a) only shows what the web stack alone costs.

The target row measures intake under the conditions of its baselines: the scheduler and the
notifier are stopped (after the scheduler published the sites), so nothing else competes for
the two cores. Intake still writes to FerretDB and publishes every event to Kafka. The whole
stack is measured first and shown as information: there the scheduler books, and the notifier
plans, what intake accepts on the same two cores, which roughly halves what intake gets
(docs/adr/0008).
"""

from __future__ import annotations

import sys
from typing import Any

from bench.report import Row, Section
from bench.stack import Bench, Child, until_ok
from scripts.infra import free_port

CONNECTIONS = 16
TARGET = 0.5
DOWNSTREAM = ("scheduler", "notifier")


def ratio(ours: dict[str, Any], baseline: dict[str, Any]) -> float | None:
    return ours["per_second"] / baseline["per_second"] if baseline["per_second"] else None


def per_second(figures: dict[str, Any]) -> str:
    errors = sum(n for status, n in figures["statuses"].items() if status != "201")
    return f"{figures['per_second']:,.1f} req/s" + (f" ({errors} failed)" if errors else "")


def p50_p99(figures: dict[str, Any]) -> str:
    if figures["p50_ms"] is None:
        return "—"
    return f"{figures['p50_ms']:,.0f} / {figures['p99_ms']:,.0f} ms"


async def baseline(bench: Bench, load: list[str], mongodb_uri: str | None) -> dict[str, Any]:
    port = free_port()
    command = [sys.executable, "-m", "bench.baseline_app", "--port", str(port)]
    child: Child = await bench.spawn(
        "baseline", command + (["--mongodb-uri", mongodb_uri] if mongodb_uri else [])
    )
    try:
        url = f"http://127.0.0.1:{port}"
        await until_ok(f"{url}/healthz", child)
        return await bench.run_load([*load, "--url", url], within=120)
    finally:
        await child.stop()


async def run(bench: Bench) -> Section:
    seconds, warmup = (3, 1) if bench.quick else (10, 2)
    load = ["closed", "--connections", str(CONNECTIONS)]
    load += ["--seconds", str(seconds), "--warmup", str(warmup)]
    async with bench.services("throughput") as stack:
        url = ["--url", stack.intake_url]
        together = await bench.run_load([*load, *url], within=120, token=stack.token)
        alone = stack.children is not None  # a running stack (`--use-running`) is left as it is
        for name in DOWNSTREAM if alone else ():
            await stack.stop(name)
        ours = await bench.run_load([*load, *url], within=120, token=stack.token)
    bare = await baseline(bench, load, None)
    stored = await baseline(bench, load, bench.mongodb_uri)
    what = f"intake POST /v1/screenings, {CONNECTIONS} connections"
    alone_what = f"{what}, scheduler and notifier stopped" if alone else what
    to_stored = ratio(ours, stored)
    to_bare = ratio(ours, bare)
    rows = [
        Row(
            f"{alone_what} vs (b) FastAPI + insert_one",
            per_second(ours),
            per_second(stored),
            to_stored,
            f"≥ {TARGET:.2f}",
            None if to_stored is None else to_stored >= TARGET,
        ),
        Row(
            f"{alone_what} vs (a) bare FastAPI (info)", per_second(ours), per_second(bare), to_bare
        ),
        Row(
            f"{alone_what}: latency p50 / p99 (baseline: b; a)",
            p50_p99(ours),
            f"{p50_p99(stored)}; {p50_p99(bare)}",
        ),
        Row(
            f"{what}, whole stack booking and planning alongside, vs (b) (info)",
            per_second(together),
            per_second(stored),
            ratio(together, stored),
        ),
    ]
    figures = {"clinicflow": ours, "whole_stack": together, "fastapi_insert": stored}
    return Section("throughput", rows, figures | {"fastapi": bare})
