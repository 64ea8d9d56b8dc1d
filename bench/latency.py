"""Benchmark 3: end-to-end latency of a workflow, screening POSTed to first session booked.

Open loop at 5, 20 and 50 workflows/s (`bench.load open`): each POST is timed from its planned
start until its client's `session_scheduled` is read from Kafka, so a slow answer delays the
clock rather than the load. Each rate gets fresh services and a short warm-up, so the backlog a
rate may leave cannot spill into the next. A booking later than 60 s counts as missing.
Target at 20/s: p50 < 100 ms and p99 < 500 ms with nothing missing.
"""

from __future__ import annotations

from typing import Any

from bench.report import Row, Section
from bench.stack import Bench
from shared.events import EventKind
from shared.topics import Topics

RATES = (5, 20, 50)
TARGET_RATE = 20
TARGET_P50_MS, TARGET_P99_MS = 100.0, 500.0
WAIT_S = 60.0


def row(figures: dict[str, Any]) -> Row:
    rate = int(figures["rate"])
    p50, p99 = figures["p50_ms"], figures["p99_ms"]
    value = "none booked" if p50 is None else f"{p50:,.0f} / {p99:,.0f} ms"
    value += f" ({figures['missing']} of {figures['created']} missing"
    if failed := figures["sent"] - figures["created"]:
        value += f", {failed} POSTs failed"
    value += ")"
    what = f"end to end at {rate}/s: p50 / p99"
    if rate != TARGET_RATE:
        return Row(what, value)
    met = (
        p50 is not None
        and p50 < TARGET_P50_MS
        and p99 < TARGET_P99_MS
        and figures["missing"] == 0
        and figures["sent"] == figures["created"]
    )
    return Row(what, value, target=f"< {TARGET_P50_MS:.0f} / < {TARGET_P99_MS:.0f} ms", met=met)


async def run(bench: Bench) -> Section:
    seconds, warmup = (5, 5) if bench.quick else (20, 20)
    results = []
    for rate in RATES:
        async with bench.services(f"latency-{rate}") as stack:
            topic = Topics(stack.prefix).name(EventKind.SESSION_SCHEDULED)
            load = ["open", "--url", stack.intake_url, "--kafka", bench.kafka, "--topic", topic]
            load += ["--rate", str(rate), "--seconds", str(seconds), "--warmup", str(warmup)]
            load += ["--wait", str(WAIT_S), "--connections", "200"]
            results.append(
                await bench.run_load(load, within=seconds + 3 * WAIT_S + 60, token=stack.token)
            )
    return Section("latency", [row(r) for r in results], {f"{r['rate']:g}/s": r for r in results})
