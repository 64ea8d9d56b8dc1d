"""`/metrics` of the three services running as processes, as an operator scrapes them: the
workflow shows in the counters, requests are labelled by route template and never by an id,
and the alert rules and the dashboard ask only for metrics the services expose."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import Servers
from tests.procs import stack
from tests.support import eventually, passing_screening

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


def value(text: str, series: str) -> float:
    """The value of one exact series (`name{labels}`) in a `/metrics` text; 0 when absent."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_the_workflow_shows_on_metrics_labelled_by_route_and_rules_use_only_those(
    servers: Servers, topic_prefix: str, db_name: str, tmp_path: Path
) -> None:
    with stack(servers, topic_prefix, db_name, tmp_path) as current:
        async with httpx.AsyncClient(auth=current.auth, timeout=30) as http:

            async def scrape(name: str) -> str:
                scraped = await http.get(f"{current.url(name)}/metrics")
                assert scraped.status_code == 200, (name, scraped.text)
                return scraped.text

            intake = current.url("intake")
            created = await http.post(f"{intake}/v1/screenings", json=passing_screening())
            assert created.status_code == 201, created.text
            screening = created.json()
            found = await http.get(f"{intake}/v1/screenings/{screening['screening_id']}")
            assert found.status_code == 200
            plan_url = f"{current.url('scheduler')}/v1/clients/{screening['client_id']}/plan"

            async def booked() -> bool:
                return (await http.get(plan_url)).status_code == 200

            await eventually(booked, within=60)
            session = (await http.get(plan_url)).json()["sessions"][0]
            done = await http.post(
                f"{current.url('scheduler')}/v1/sessions/{session['session_id']}/complete",
                json={
                    "needle_depth_mm": 0.5,
                    "areas": ["face"],
                    "anesthetic_used": False,
                    "bleeding": False,
                    "practitioner_id": "pr-metrics",
                },
            )
            assert done.status_code == 200, done.text

            async def immediate_step_delivered() -> bool:
                text = await scrape("notifier")
                return value(text, "clinicflow_aftercare_timer_lag_seconds_count") >= 1 and (
                    value(text, 'clinicflow_deliveries_total{channel="log",outcome="delivered"}')
                    >= 1
                )

            await eventually(immediate_step_delivered, within=60)
            texts = {name: await scrape(name) for name in ("intake", "scheduler", "notifier")}

    assert value(texts["intake"], 'clinicflow_screenings_total{outcome="passed"}') == 1
    assert value(texts["scheduler"], 'clinicflow_sessions_booked_total{how="first"}') == 1
    assert value(texts["scheduler"], "clinicflow_sessions_completed_total") == 1

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
