"""The production stack (`deploy/docker-compose.yml`, `Dockerfile`) is checked by reading it.

No Docker engine runs on the dev and CI machines, so these tests validate the files' structure
against what SPEC section 1 asks; they need no server and use no fixture from conftest.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DEMO_OVERLAY = DEPLOY / "docker-compose.demo.yml"
NOTIFIER_ENV_EXAMPLE = DEPLOY / "notifier.env.example"
DOCKERFILE = ROOT / "Dockerfile"

APP_PORTS = {"intake": 8001, "scheduler": 8002, "notifier": 8003}
INFRA = ("kafka", "mongodb")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "the compose file is not a mapping"
    return data


def service(name: str) -> dict[str, Any]:
    services = load_compose().get("services") or {}
    assert name in services, f"service {name!r} missing"
    svc = services[name]
    assert isinstance(svc, dict)
    return svc


def environment(svc: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whether written as a mapping or as KEY=VALUE items."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return dict(str(item).partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def healthcheck_text(svc: dict[str, Any]) -> str:
    check = svc.get("healthcheck") or {}
    assert not check.get("disable"), "healthcheck disabled"
    test = check.get("test")
    assert test, "no healthcheck test"
    if isinstance(test, str):
        return test
    assert test[0] in {"CMD", "CMD-SHELL"}, f"healthcheck test must start with CMD: {test}"
    return " ".join(str(part) for part in test[1:])


def published_container_ports(svc: dict[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) pairs from short ("8001:8001") or long syntax ports."""
    pairs: set[tuple[int, int]] = set()
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            pairs.add((int(entry["published"]), int(entry["target"])))
            continue
        spec = str(entry).split("/")[0]  # drop "/tcp"
        parts = spec.split(":")
        assert len(parts) >= 2, f"port {entry!r} is not published to the host"
        pairs.add((int(parts[-2]), int(parts[-1])))
    return pairs


def image_tag(image: str) -> str:
    """The tag of an image, which must be an exact release (`4.1.1`, `3.11.13-slim-bookworm`)."""
    name, _, tag = image.rpartition(":")
    assert name, f"image {image!r} has no pinned tag"
    assert "/" not in tag, f"image {image!r} has no pinned tag"
    assert re.match(r"^\d+\.\d+\.\d+(-[a-z0-9.-]+)?$", tag), f"{image!r} is not an exact version"
    return tag


def major(tag: str) -> int:
    match = re.match(r"^(\d+)", tag)
    assert match, f"tag {tag!r} does not start with a version number"
    return int(match.group(1))


def named_volumes(svc: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for entry in svc.get("volumes") or []:
        if isinstance(entry, dict):
            if entry.get("type", "volume") == "volume" and entry.get("source"):
                names.add(str(entry["source"]))
            continue
        source = str(entry).split(":")[0]
        if ":" in str(entry) and not source.startswith((".", "/", "~", "$")):
            names.add(source)
    return names


# --- the stack --------------------------------------------------------------------------------


def test_compose_has_the_five_services() -> None:
    services = load_compose().get("services") or {}
    assert set(services) >= {*INFRA, *APP_PORTS}


def test_kafka_is_the_official_image_in_kraft_mode() -> None:
    kafka = service("kafka")
    image = str(kafka.get("image", ""))
    assert image.startswith("apache/kafka:"), image
    assert major(image_tag(image)) >= 4, "SPEC asks for Kafka 4.x"
    env = environment(kafka)
    roles = {role.strip() for role in env.get("KAFKA_PROCESS_ROLES", "").split(",")}
    assert roles == {"broker", "controller"}, roles
    assert env.get("KAFKA_NODE_ID"), "KRaft needs a node id"
    voters = env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "")
    assert re.fullmatch(rf"{env['KAFKA_NODE_ID']}@kafka:\d+", voters), voters
    assert "CONTROLLER" in env.get("KAFKA_CONTROLLER_LISTENER_NAMES", "")
    assert not any("ZOOKEEPER" in key for key in env), "KRaft runs without ZooKeeper"
    # A single broker: internal topics must not ask for more replicas than exist.
    assert env.get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR") == "1"
    assert env.get("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR") == "1"


def test_kafka_advertises_the_address_the_services_use() -> None:
    advertised = environment(service("kafka")).get("KAFKA_ADVERTISED_LISTENERS", "")
    hosts = {listener.split("://", 1)[-1] for listener in advertised.split(",")}
    for name in APP_PORTS:
        bootstrap = environment(service(name)).get("KAFKA_BOOTSTRAP_SERVERS", "")
        assert set(bootstrap.split(",")) <= hosts, (name, bootstrap, advertised)


def test_mongodb_is_the_official_image_version_7_or_newer() -> None:
    image = str(service("mongodb").get("image", ""))
    assert image.startswith("mongo:"), image
    assert major(image_tag(image)) >= 7, image


@pytest.mark.parametrize("name", INFRA)
def test_infrastructure_has_a_healthcheck_and_a_named_volume(name: str) -> None:
    svc = service(name)
    text = healthcheck_text(svc)
    expected = {"kafka": "kafka-broker-api-versions", "mongodb": "ping"}[name]
    assert expected in text, text
    volumes = named_volumes(svc)
    assert volumes, f"{name} keeps its data in no named volume"
    declared = load_compose().get("volumes") or {}
    assert volumes <= set(declared), f"volumes {volumes - set(declared)} not declared at top level"


# --- the three services -----------------------------------------------------------------------


@pytest.mark.parametrize("name", APP_PORTS)
def test_service_builds_from_the_root_dockerfile(name: str) -> None:
    svc = service(name)
    build = svc.get("build")
    assert isinstance(build, dict), "build must name its context and Dockerfile"
    context = (DEPLOY / str(build.get("context", "."))).resolve()
    assert context == ROOT, f"build context {context} is not the repository root"
    assert (context / str(build.get("dockerfile", "Dockerfile"))).resolve() == DOCKERFILE
    command = svc.get("command")
    if isinstance(command, str):
        command = command.split()
    assert command == ["python", "-m", f"services.{name}"], command


@pytest.mark.parametrize(("name", "port"), APP_PORTS.items())
def test_service_publishes_its_spec_port(name: str, port: int) -> None:
    assert (port, port) in published_container_ports(service(name))


@pytest.mark.parametrize("name", APP_PORTS)
def test_service_reaches_kafka_and_mongodb_by_service_name(name: str) -> None:
    svc = service(name)
    env = environment(svc)
    assert env.get("KAFKA_BOOTSTRAP_SERVERS") == "kafka:9092"
    assert re.match(r"^mongodb://mongodb(:27017)?(/|$)", env.get("MONGODB_URI", "")), env
    # Inside a container the HTTP server must listen beyond loopback to be published.
    assert ipaddress.ip_address(env.get("CLINICFLOW_HTTP_HOST", "127.0.0.1")).is_unspecified
    assert env.get("CLINICFLOW_TOPIC_PREFIX") == "clinic."
    assert env.get("CLINICFLOW_ENVIRONMENT") == "production"


@pytest.mark.parametrize("name", APP_PORTS)
def test_service_waits_for_healthy_kafka_and_mongodb(name: str) -> None:
    depends_on = service(name).get("depends_on")
    assert isinstance(depends_on, dict), "depends_on must carry conditions"
    for dependency in INFRA:
        assert (depends_on.get(dependency) or {}).get("condition") == "service_healthy", (
            name,
            dependency,
        )


@pytest.mark.parametrize("name", APP_PORTS)
def test_service_restarts_on_failure(name: str) -> None:
    assert service(name).get("restart") in {"always", "unless-stopped", "on-failure"}


@pytest.mark.parametrize(("name", "port"), APP_PORTS.items())
def test_service_healthcheck_asks_its_own_readyz(name: str, port: int) -> None:
    text = healthcheck_text(service(name))
    assert f"127.0.0.1:{port}/readyz" in text or f"localhost:{port}/readyz" in text, text
    # python:3.11-slim has no curl or wget: the check must use what the image has.
    assert "python" in text, text
    assert not re.search(r"\b(curl|wget)\b", text), text


@pytest.mark.parametrize("name", APP_PORTS)
def test_service_requires_the_id_secret(name: str) -> None:
    value = environment(service(name)).get("CLINICFLOW_ID_SECRET", "")
    assert value.startswith("${CLINICFLOW_ID_SECRET:?"), value


def test_intake_requires_the_health_answer_key() -> None:
    value = environment(service("intake")).get("CLINICFLOW_HEALTH_KEY", "")
    assert value.startswith("${CLINICFLOW_HEALTH_KEY:?"), (
        "the key must come from the environment and compose must refuse to start without it"
    )


def test_notifier_requires_the_webhook_secret_key() -> None:
    value = environment(service("notifier")).get("CLINICFLOW_WEBHOOK_KEY", "")
    assert value.startswith("${CLINICFLOW_WEBHOOK_KEY:?"), (
        "webhook secrets are sealed with it: compose must refuse to start without it"
    )


# --- the image --------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    assert DOCKERFILE.is_file(), "Dockerfile missing at the repository root"
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    instructions: list[tuple[str, str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [rest for keyword, rest in dockerfile_instructions() if keyword == "USER"]
    assert users, "no USER instruction: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, users[-1]


def test_dockerfile_installs_the_project_without_dev_extras() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0][0] == "FROM"
    assert instructions[0][1].startswith("python:3.11."), instructions[0][1]
    assert "slim" in image_tag(instructions[0][1]), instructions[0][1]
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert re.search(r"pip install\b[^&;]*\s\.(\s|$)", runs), "the project is not pip-installed"
    assert ".[dev]" not in runs, "dev extras belong in the virtualenv, not the image"
    assert "--require-hashes --requirement requirements/runtime.lock" in runs, runs
    assert "--no-deps --no-build-isolation ." in runs, "the project must not resolve anything"
    env = " ".join(rest for keyword, rest in instructions if keyword == "ENV")
    assert re.search(r"(^|\s)PYTHONUNBUFFERED=1(\s|$)", env), "Python output would be buffered"


# --- production settings and the demo overlay -----------------------------------------------


def test_production_compose_loads_no_demo_sites() -> None:
    scheduler = service("scheduler")
    assert "CLINICFLOW_SITES_FILE" not in environment(scheduler)
    assert not any("demo" in str(v) for v in scheduler.get("volumes") or [])


def test_notifier_settings_come_from_an_optional_env_file_with_a_commented_example() -> None:
    from services.notifier.settings import NotifierSettings
    from shared.settings import ServiceSettings

    entries = service("notifier").get("env_file") or []
    assert entries == [{"path": "./notifier.env", "required": False}], entries
    assert "deploy/*.env" in (ROOT / ".gitignore").read_text(), "credentials could be committed"
    example = NOTIFIER_ENV_EXAMPLE.read_text(encoding="utf-8")
    assignments = [line for line in example.splitlines() if "=" in line]
    assert assignments, "the example sets nothing"
    assert all(line.startswith("# ") for line in assignments), "the example must only suggest"
    named = {line[2:].split("=", 1)[0] for line in assignments}
    own = set(NotifierSettings.model_fields) - set(ServiceSettings.model_fields)
    wanted = {f"CLINICFLOW_{name.upper()}" for name in own} - {
        "CLINICFLOW_MAX_BODY_BYTES",
        "CLINICFLOW_SERVICE_NAME",
        "CLINICFLOW_HTTP_PORT",
        "CLINICFLOW_WEBHOOK_KEY",  # a credential: from the environment, like the others
        "CLINICFLOW_LOCAL_WEBHOOK_KEY_FILE",  # outside production only
    }
    assert wanted <= named, f"not in the example: {sorted(wanted - named)}"


def demo_sites_file() -> Path:
    """The repository file the demo overlay mounts where CLINICFLOW_SITES_FILE points."""
    scheduler = load_compose(DEMO_OVERLAY)["services"]["scheduler"]
    target = environment(scheduler).get("CLINICFLOW_SITES_FILE")
    assert target, "the demo overlay gives the scheduler no sites file"
    for entry in scheduler.get("volumes") or []:
        source, _, rest = str(entry).partition(":")
        if rest.split(":")[0] == target:
            assert source.startswith("."), f"{source} is not a file of the repository"
            return (DEPLOY / source).resolve()
    raise AssertionError(f"nothing is mounted at {target}")


def test_demo_overlay_seeds_the_demo_chain() -> None:
    path = demo_sites_file()
    assert path.is_file(), f"{path} missing"
    assert path.is_relative_to(ROOT)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    sites = {site["site_id"]: site for site in data["sites"]}
    assert set(sites) >= {"paris-01", "nyc-01"}
    assert sites["paris-01"]["timezone"] == "Europe/Paris"
    assert sites["nyc-01"]["timezone"] == "America/New_York"
    assert "sun" not in sites["paris-01"]["opening_hours"], "Paris is closed on Sundays"
    for site_id, site in sites.items():
        ZoneInfo(site["timezone"])  # raises for a name that is not an IANA zone
        assert isinstance(site["name"], str), site_id
        assert site["name"].strip(), site_id
        rooms = site["rooms"]
        assert type(rooms) is int, (site_id, rooms)
        assert rooms >= 1, (site_id, rooms)
        hours = site["opening_hours"]
        assert hours, f"{site_id} is never open"
        assert set(hours) <= set(WEEKDAYS), f"{site_id}: unknown weekday in {set(hours)}"
        for day, span in hours.items():
            # Strings, not YAML 1.1 sexagesimal numbers (unquoted 10:00 parses as 600).
            assert isinstance(span, list), (site_id, day, span)
            assert len(span) == 2, (site_id, day, span)
            for time in span:
                assert isinstance(time, str), (site_id, day, time)
                assert HHMM.match(time), (site_id, day, time)
            opens, closes = span
            assert opens < closes, (site_id, day, span)
