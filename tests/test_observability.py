"""Prometheus, its alert rules and the Grafana dashboard in `deploy/`, checked by reading them
and with `promtool` (built from its Go module by `scripts.infra`, once, cached).

Which metric names they use is checked against running services in
`tests/integration/test_service_metrics.py`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scripts import infra
from tests.test_compose import APP_PORTS, load_compose, named_volumes

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "clinicflow.json"
DASHBOARD_SCHEMA = Path(__file__).with_name("grafana_dashboard.schema.json")
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "clinicflow.yml"
EXACT_TAG = re.compile(r"^v?\d+\.\d+\.\d+$")


def yaml_file(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a mapping"
    return data


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts (relative to deploy/)."""
    found = {}
    for entry in service.get("volumes") or []:
        source, target = str(entry).split(":")[:2]
        if source.startswith("."):
            found[target] = source
    return found


# --- compose ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "image"), [("prometheus", "prom/prometheus"), ("grafana", "grafana/grafana")]
)
def test_observability_services_are_official_pinned_images_in_their_own_profile(
    name: str, image: str
) -> None:
    services = load_compose()["services"]
    service = services[name]
    repository, _, tag = str(service["image"]).rpartition(":")
    assert repository == image
    assert EXACT_TAG.match(tag), f"{service['image']} is not an exact release"
    assert service.get("profiles") == ["observability"]
    assert named_volumes(service) <= set(load_compose()["volumes"]), "undeclared volume"
    for app in APP_PORTS:
        assert not services[app].get("profiles"), f"{app} must start without any profile"


def test_prometheus_reads_this_folder_and_grafana_its_provisioning() -> None:
    services = load_compose()["services"]
    assert mounts(services["prometheus"])["/etc/prometheus"] == "./prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana = mounts(services["grafana"])
    assert grafana["/etc/grafana/provisioning"] == "./grafana/provisioning"
    path = yaml_file(PROVIDERS)["providers"][0]["options"]["path"]
    assert (DEPLOY / grafana[path]).resolve() == DASHBOARD.parent


# --- the scrape configuration -----------------------------------------------------------------


def test_every_service_is_scraped_with_the_ops_token_which_git_ignores() -> None:
    config = yaml_file(PROMETHEUS / "prometheus.yml")
    (job,) = config["scrape_configs"]
    targets = {
        target: group["labels"]["service"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert targets == {f"{name}:{port}": name for name, port in APP_PORTS.items()}
    assert job["metrics_path"] == "/metrics"
    authorization = job["authorization"]
    assert authorization["type"] == "Bearer"
    token = PROMETHEUS / authorization["credentials_file"]
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(token)], cwd=ROOT, check=False
    ).returncode
    assert ignored == 0, f"{token} could be committed"


# --- the dashboard ----------------------------------------------------------------------------


def test_dashboard_matches_the_schema_grafana_provisioning_needs() -> None:
    schema = json.loads(DASHBOARD_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(dashboard(), schema)


def test_dashboard_panels_use_the_provisioned_datasource_and_do_not_overlap() -> None:
    (source,) = yaml_file(DATASOURCES)["datasources"]
    assert source["url"] == "http://prometheus:9090"
    cells: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]
            assert all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered


def test_dashboard_shows_what_an_operator_looks_for() -> None:
    exprs = " ".join(t["expr"] for p in dashboard()["panels"] for t in p.get("targets", []))
    for metric in (
        "clinicflow_consumer_lag_records",
        "clinicflow_dlq_depth_records",
        "clinicflow_http_requests_total",
        "clinicflow_http_request_duration_seconds_bucket",
        "clinicflow_outbox_lag_seconds_bucket",
        "clinicflow_aftercare_timer_lag_seconds_bucket",
        "clinicflow_screenings_total",
        "clinicflow_sessions_booked_total",
        "clinicflow_sessions_completed_total",
        "clinicflow_sessions_cancelled_total",
        "clinicflow_deliveries_total",
    ):
        assert metric in exprs, f"no panel shows {metric}"


# --- promtool ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> Path:
    """Built on first use when `make promtool` has not built it yet: allow for a long build."""
    return infra.promtool_binary()


def run_promtool(promtool: Path, *args: str, cwd: Path) -> str:
    result = subprocess.run(
        [str(promtool), *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.timeout(1800)
def test_promtool_accepts_the_rules_and_their_unit_tests(promtool: Path) -> None:
    out = run_promtool(promtool, "check", "rules", "alerts.yml", cwd=PROMETHEUS)
    assert "SUCCESS: 7 rules found" in out, out
    run_promtool(promtool, "test", "rules", "alerts.test.yml", cwd=PROMETHEUS)


@pytest.mark.timeout(1800)
def test_promtool_parses_every_dashboard_query(promtool: Path, tmp_path: Path) -> None:
    """promtool has no offline PromQL checker, but it parses the expression of each recording
    rule it checks: every panel query becomes one."""
    queries = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(queries)]
    (tmp_path / "queries.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]})
    )
    out = run_promtool(promtool, "check", "rules", "queries.yml", cwd=tmp_path)
    assert f"SUCCESS: {len(queries)} rules found" in out, out


@pytest.mark.timeout(1800)
def test_promtool_accepts_the_configuration(promtool: Path, tmp_path: Path) -> None:
    """Checked in a copy with a stand-in token: the real one is a secret, never in git."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS, copy, ignore=shutil.ignore_patterns("ops.token"))
    (copy / "ops.token").write_text("stand-in\n")
    run_promtool(promtool, "check", "config", "prometheus.yml", cwd=copy)
