"""Every generic 4xx of every guarded route, provoked on the three services running as real
processes, is the problem details that the service's served OpenAPI document declares for it
(SPEC section 8): no token (401), a role without the permission (403), a body over the limit
(413) and an invalid parameter or body (422).

The routes come from each served `/openapi.json`, so a route added later is checked too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from services.intake import api as intake_api
from services.notifier import api as notifier_api
from services.scheduler import api as scheduler_api
from services.scheduler import ops_page
from shared import ops
from shared.access import ROLE_PERMISSIONS
from shared.health import METRICS_ROUTES
from tests.access import bearer
from tests.conftest import Servers
from tests.problems import check_problem
from tests.procs import Stack, stack

pytestmark = pytest.mark.integration

PERMISSIONS = {
    "intake": {**intake_api.ROUTES, **METRICS_ROUTES, **ops.ROUTES},
    "scheduler": {
        **scheduler_api.ROUTES,
        **METRICS_ROUTES,
        **ops.ROUTES,
        **ops.STALLED_ROUTES,
        **ops_page.ROUTES,
    },
    "notifier": {**notifier_api.ROUTES, **METRICS_ROUTES, **ops.ROUTES},
}
INVALID = "~"
"""No id pattern, UUID or number accepts it."""
TOO_LARGE = b" " * (64 * 1024 + 1)
Operation = tuple[str, str, dict[str, Any]]


@pytest.fixture(scope="module")
def running(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("problems")
    with stack(servers, f"pb{uuid.uuid4().hex[:8]}.", f"pb_{uuid.uuid4().hex[:8]}", logs) as s:
        yield s


def guarded(document: dict[str, Any]) -> Iterator[Operation]:
    for template, item in document["paths"].items():
        for method, operation in item.items():
            if "401" in operation["responses"]:
                yield method.upper(), template, operation


def refused_by(document: dict[str, Any], parameter: dict[str, Any]) -> bool:
    schema = {**parameter["schema"], "components": document["components"]}
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    return not jsonschema.Draft202012Validator(schema, format_checker=checker).is_valid(INVALID)


def request(
    client: httpx.Client,
    document: dict[str, Any],
    operation: Operation,
    *,
    broken: bool = False,
    **kwargs: Any,
) -> httpx.Request:
    """The route with valid path parameters, or with its first constrained parameter (its
    body, when it has one) invalid when `broken`."""
    method, template, declared = operation
    parameters: list[dict[str, Any]] = declared.get("parameters", [])
    target: dict[str, Any] | None = None
    if broken and "requestBody" in declared:
        kwargs["json"] = []
    elif broken:
        target = next(p for p in parameters if refused_by(document, p))
    path, query, headers = template, {}, {**kwargs.pop("headers", {})}
    for parameter in parameters:
        value = INVALID if parameter is target else str(uuid.uuid4())
        if parameter["in"] == "path":
            path = path.replace("{" + parameter["name"] + "}", value)
        elif parameter is target and parameter["in"] == "query":
            query[parameter["name"]] = value
        elif parameter is target:
            headers[parameter["name"]] = value
    return client.build_request(method, path, params=query, headers=headers, **kwargs)


@pytest.mark.parametrize("service", ["intake", "scheduler", "notifier"])
def test_every_generic_4xx_is_the_declared_problem(running: Stack, service: str) -> None:
    tokens = running.auth.tokens
    with httpx.Client(base_url=running.url(service), timeout=30) as client:
        document = client.get("/openapi.json").json()
        checked = set()
        for operation in guarded(document):
            method, template, declared = operation
            anonymous = client.send(request(client, document, operation))
            assert anonymous.status_code == 401, (method, template, anonymous.text)
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            permission = PERMISSIONS[service][(method, template)]
            role = next(r for r in tokens if permission not in ROLE_PERMISSIONS[r])
            refused = client.send(
                request(client, document, operation, headers=bearer(tokens[role]))
            )
            assert refused.status_code == 403, (method, template, role, refused.text)
            answers = [anonymous, refused]
            if "413" in declared["responses"]:
                large = request(client, document, operation, content=TOO_LARGE)
                answers.append(client.send(large, auth=running.auth))
                assert answers[-1].status_code == 413, (method, template, answers[-1].text)
            if "422" in declared["responses"]:
                invalid = request(client, document, operation, broken=True)
                answers.append(client.send(invalid, auth=running.auth))
                assert answers[-1].status_code == 422, (method, template, answers[-1].text)
            for answer in answers:
                check_problem(document, method, template, answer)
            checked.add((method, template))
    assert checked == set(PERMISSIONS[service]), "every guarded route declares its 401"
