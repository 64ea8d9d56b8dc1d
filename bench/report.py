"""What `python -m bench` prints and keeps: one markdown table, and `bench/results.json`.

Every benchmark returns a `Section`: its table rows plus its raw figures, so the table stays
readable while the JSON keeps every number (and the machine it was measured on) for comparing
runs later.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

RESULTS = Path(__file__).with_name("results.json")
COLUMNS = ("what", "clinicflow", "baseline (same run)", "ratio", "target", "met")


@dataclass(frozen=True)
class Row:
    """One line of the table; `ratio` is clinicflow / baseline, `met` None when no target."""

    what: str
    value: str
    baseline: str = "—"
    ratio: float | None = None
    target: str = "—"
    met: bool | None = None


@dataclass
class Section:
    """The result of one benchmark: its rows and the raw figures behind them."""

    name: str
    rows: list[Row]
    figures: dict[str, Any] = field(default_factory=dict)


# --- Extension point: per-hot-path figures ---------------------------------------------------
# `bench/hotpaths.py` (optional, written separately) defines
#
#     async def run(context: HotpathContext) -> list[Row]
#
# returning rows named "timers", "room search", "relay" and "idempotency markers", each at
# 1,000 and 100,000 stored documents, with target "100k ≤ 1.5 x 1k". `python -m bench` calls it
# with infrastructure only (no services running) and drops `scratch_database` afterwards.


@dataclass(frozen=True)
class HotpathContext:
    """Where the hot-path benchmarks may write: their own database and topic prefix."""

    mongodb_uri: str
    kafka_bootstrap_servers: str
    topic_prefix: str
    scratch_database: str
    quick: bool


class Hotpaths(Protocol):
    async def run(self, context: HotpathContext) -> list[Row]: ...


# ----------------------------------------------------------------------------------------------


def markdown(rows: list[Row]) -> str:
    def cells(row: Row) -> tuple[str, ...]:
        ratio = "—" if row.ratio is None else f"{row.ratio:.{2 if row.ratio >= 0.1 else 3}f}"
        met = "—" if row.met is None else ("yes" if row.met else "**no**")
        return (row.what, row.value, row.baseline, ratio, row.target, met)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """The box the figures come from: they mean little without it."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [
        line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line
    ]
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    total_kb = next(
        (int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal")), 0
    )
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": models[0] if models else platform.processor(),
        "memory_mb": total_kb // 1024,
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write(sections: list[Section], *, quick: bool, host: dict[str, Any]) -> Path:
    document = {
        "machine": host,
        "quick": quick,
        "rows": [asdict(row) for section in sections for row in section.rows],
        "figures": {section.name: section.figures for section in sections},
    }
    RESULTS.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return RESULTS
