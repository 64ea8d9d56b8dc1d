"""The alert rules and the dashboard ask only for metrics the running services expose, and
`/metrics` labels requests by route template, never by an id, on the real processes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import Servers
from tests.procs import stack
from tests.support import passing_screening

pytestmark = pytest.mark.integration
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC = re.compile(r"\b(?:clinicflow|faststream)_[a-z0-9_]+\b")
SUFFIXES = ("_bucket", "_sum", "_count")


def exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    board = json.loads((DEPLOY / "grafana" / "dashboards" / "clinicflow.json").read_text())
    panels = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    return alerts + panels


def exposed(text: str) -> set[str]:
    """Every series name a `/metrics` text can hold, from its `# TYPE` lines (present before
    the first sample of a labelled metric)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "histogram":
                names.update(name + suffix for suffix in SUFFIXES)
    return names


async def test_alerts_and_dashboard_use_only_exposed_metrics_and_routes_are_templates(
    servers: Servers, topic_prefix: str, db_name: str, tmp_path: Path
) -> None:
    with stack(servers, topic_prefix, db_name, tmp_path) as current:
        async with httpx.AsyncClient(auth=current.auth, timeout=30) as http:
            intake = current.url("intake")
            created = await http.post(f"{intake}/v1/screenings", json=passing_screening())
            assert created.status_code == 201, created.text
            screening = created.json()
            found = await http.get(f"{intake}/v1/screenings/{screening['screening_id']}")
            assert found.status_code == 200
            texts = {}
            for name in ("intake", "scheduler", "notifier"):
                scraped = await http.get(f"{current.url(name)}/metrics")
                assert scraped.status_code == 200, (name, scraped.text)
                texts[name] = scraped.text

    available = set().union(*(exposed(text) for text in texts.values()))
    used = {name for expr in exprs() for name in METRIC.findall(expr)}
    assert used, "no metric found in the rules and the dashboard"
    assert used <= available, f"not exposed by any service: {sorted(used - available)}"

    route = 'route="/v1/screenings/{screening_id}"'
    assert re.search(
        rf'clinicflow_http_requests_total\{{method="GET",{route},status="2xx"}}', texts["intake"]
    )
    everything = "\n".join(texts.values())
    assert screening["screening_id"] not in everything
    assert screening["client_id"] not in everything
