"""Benchmark 4: resident memory of each service process (VmRSS), the largest seen when the
processes of each phase were stopped, i.e. after they carried that phase's load.

Run alone (`--only rss`), it measures a stack that just started and took one screening.
Target: under 150 MB each, so that three services fit a small container or VM.
"""

from __future__ import annotations

from bench.report import Row, Section
from bench.stack import SERVICES, Bench

TARGET_MB = 150


async def run(bench: Bench) -> Section:
    if not bench.rss_kb:
        async with bench.services("rss"):
            pass
    rows = []
    for name in SERVICES:
        kb = bench.rss_kb.get(name)
        value = "unknown (no pid)" if kb is None else f"{kb / 1024:,.0f} MB"
        met = None if kb is None else kb / 1024 < TARGET_MB
        rows.append(Row(f"RSS {name} after the runs", value, target=f"< {TARGET_MB} MB", met=met))
    return Section("rss", rows, {"rss_kb": dict(bench.rss_kb)})
