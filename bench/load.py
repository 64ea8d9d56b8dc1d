"""The one load generator of the HTTP benchmarks, run as its own process so that its event loop
shares nothing with what it measures: `python -m bench.load closed|open ... --out FILE`.

`closed`: N connections each POSTing as fast as answers come (throughput). `open`: POSTs at a
fixed rate whatever the answers do, each timed from its planned start until its client's first
booking is read from Kafka (end-to-end latency, free of coordinated omission). Every request
screens a new client (no client_id) with a passing questionnaire, like a front desk does. The
token, if any, comes from `BENCH_TOKEN`; the figures are written as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.watch import BookingWatch
from scripts.stack import DEMO_SITES
from services.intake.domain.questionnaire import HealthAnswers

HEALTH = dict.fromkeys(HealthAnswers.model_fields, False)
NUMBERS = itertools.count()


def screening(n: int) -> dict[str, Any]:
    """A passing `POST /v1/screenings` body for new client number `n` at a demo site."""
    return {
        "site_id": DEMO_SITES[n % len(DEMO_SITES)],
        "client": {"full_name": f"Client {n}", "email": f"client{n}@example.org", "locale": "fr"},
        "treatment": {"areas": ["face"], "concerns": ["acne_scars"], "severity": "severe"},
        "skin": {"sensitivity": "normal", "fitzpatrick": 4},
        "health": HEALTH,
        "consent": {"treatment": True, "data_processing": True},
    }


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile in milliseconds of seconds `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def post(http: httpx.AsyncClient) -> tuple[str, dict[str, Any] | None]:
    """One screening: its status (or error name) and, when created, the answer."""
    try:
        answer = await http.post(
            "/v1/screenings",
            content=json.dumps(screening(next(NUMBERS))),
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
    except httpx.HTTPError as exc:
        return type(exc).__name__, None
    return str(answer.status_code), answer.json() if answer.status_code == 201 else None


async def burst(http: httpx.AsyncClient, connections: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    start = time.monotonic()

    async def worker() -> None:
        while time.monotonic() - start < seconds:
            sent = time.perf_counter()
            status, created = await post(http)
            statuses[status] += 1
            if created is not None:
                latencies.append(time.perf_counter() - sent)

    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.monotonic() - start
    return {
        "created": len(latencies),
        "seconds": elapsed,
        "per_second": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "statuses": dict(statuses),
    }


async def paced(
    http: httpx.AsyncClient, watch: BookingWatch, rate: float, count: int, wait: float
) -> dict[str, Any]:
    """POST `count` screenings at `rate`/s; latency is planned start -> first booking read."""
    planned: dict[str, float] = {}
    statuses: Counter[str] = Counter()
    first = time.monotonic() + 0.1

    async def one(i: int) -> None:
        at = first + i / rate
        await asyncio.sleep(at - time.monotonic())
        status, created = await post(http)
        statuses[status] += 1
        if created is not None:
            planned[created["client_id"]] = at

    await asyncio.gather(*(one(i) for i in range(count)))
    await watch.wait_for(planned, max(planned.values(), default=0.0) + wait)
    latencies = [
        watch.seen[client] - at
        for client, at in planned.items()
        if client in watch.seen and watch.seen[client] - at <= wait
    ]
    return {
        "rate": rate,
        "sent": count,
        "created": len(planned),
        "booked": len(latencies),
        "missing": len(planned) - len(latencies),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "statuses": dict(statuses),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    token = os.environ.get("BENCH_TOKEN")
    bearer = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(
        base_url=args.url,
        headers={"content-type": "application/json", **bearer},
        limits=httpx.Limits(max_connections=args.connections),
        timeout=60,
    ) as http:
        if args.mode == "closed":
            await burst(http, args.connections, args.warmup)
            return await burst(http, args.connections, args.seconds)
        async with BookingWatch(args.kafka, args.topic) as watch:
            await paced(http, watch, 5, int(args.warmup), args.wait)
            return await paced(http, watch, args.rate, round(args.rate * args.seconds), args.wait)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("mode", choices=["closed", "open"])
    parser.add_argument("--url", required=True, help="the intake (or baseline) base URL")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=2, help="closed: s; open: screenings")
    parser.add_argument("--rate", type=float, default=20, help="open: screenings per second")
    parser.add_argument("--wait", type=float, default=60, help="open: s a booking may take")
    parser.add_argument("--kafka", help="open: bootstrap servers")
    parser.add_argument("--topic", help="open: the session_scheduled topic")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    figures = asyncio.run(main(arguments))
    arguments.out.write_text(json.dumps(figures))
