"""Benchmark 1: intake's `POST /v1/screenings` with 16 concurrent connections.

The same load generator then drives two baselines on the same box (`bench.baseline_app`): (a)
a bare FastAPI app with intake's command model, (b) the same plus one `insert_one` into the same
FerretDB. Intake does more than (b) (screening, encryption, an outbox, Kafka), so the target is
half of (b); the ratio to (a) only shows what the web stack alone costs. The services are
stopped while the baselines run, so nothing else competes for the two cores.
"""

from __future__ import annotations

import sys
from typing import Any

from bench.report import Row, Section
from bench.stack import Bench, Child, until_ok
from scripts.infra import free_port

CONNECTIONS = 16
TARGET = 0.5


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
        ours = await bench.run_load(
            [*load, "--url", stack.intake_url], within=120, token=stack.token
        )
    bare = await baseline(bench, load, None)
    stored = await baseline(bench, load, bench.mongodb_uri)
    what = f"intake POST /v1/screenings, {CONNECTIONS} connections"
    to_stored = ours["per_second"] / stored["per_second"] if stored["per_second"] else None
    to_bare = ours["per_second"] / bare["per_second"] if bare["per_second"] else None
    rows = [
        Row(
            f"{what} vs (b) FastAPI + insert_one",
            per_second(ours),
            per_second(stored),
            to_stored,
            f"≥ {TARGET:.2f}",
            None if to_stored is None else to_stored >= TARGET,
        ),
        Row(f"{what} vs (a) bare FastAPI (info)", per_second(ours), per_second(bare), to_bare),
        Row(
            f"{what}: latency p50 / p99 (baseline: b; a)",
            p50_p99(ours),
            f"{p50_p99(stored)}; {p50_p99(bare)}",
        ),
    ]
    return Section(
        "throughput", rows, {"clinicflow": ours, "fastapi_insert": stored, "fastapi": bare}
    )
