"""Error answers are RFC 9457 problem details, and every OpenAPI document declares each one
a route can give, the bearer scheme, and (notifier) the outgoing webhooks."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from services.intake.app import create_app as intake_app
from services.notifier.app import create_app as notifier_app
from services.scheduler.app import create_app as scheduler_app
from shared.envelope import CONTENT_TYPE
from shared.errors import (
    Conflict,
    ConflictReason,
    FieldRejected,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
)
from shared.events import COMPACTED, EVENT_MODELS, EventKind
from shared.http import install_error_handlers
from shared.locks import LockTimeout
from shared.openapi import ANSWER_MODELS, add_schemas
from shared.problems import MEDIA_TYPE
from tests.problems import check_problem

PROBLEM_SCHEMAS = {f"#/components/schemas/{m.__name__}" for m in ANSWER_MODELS}


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    apps = {"intake": intake_app(), "scheduler": scheduler_app(), "notifier": notifier_app()}
    return {name: app.openapi() for name, app in apps.items()}


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def test_every_reference_resolves_and_fastapis_own_422_is_gone(
    documents: dict[str, dict[str, Any]],
) -> None:
    for document in documents.values():
        assert "HTTPValidationError" not in json.dumps(document)
        schemas = document["components"]["schemas"]
        for ref in references(document):
            assert ref.removeprefix("#/components/schemas/") in schemas, ref


def test_every_error_answer_is_declared_as_problem_details(
    documents: dict[str, dict[str, Any]],
) -> None:
    for service, document in documents.items():
        for method, path, operation in operations(document):
            answers = operation["responses"]
            for status, declared in answers.items():
                if not status.isdigit() or int(status) < 400 or path == "/readyz":
                    continue
                assert list(declared["content"]) == [MEDIA_TYPE], (service, method, path)
                schema = declared["content"][MEDIA_TYPE]["schema"]["$ref"]
                assert schema in PROBLEM_SCHEMAS, (service, method, path, status)
                expected = {"409": "ConflictProblem", "422": "ValidationProblem"}
                assert schema.endswith(expected.get(status, "/Problem")), (path, status)
            if path.startswith("/v1/") or path == "/metrics":
                assert operation["security"] == [{"bearer": []}], (service, method, path)
                assert {"401", "403", "429"} <= set(answers), (service, method, path)
                assert "WWW-Authenticate" in answers["401"]["headers"]
            else:
                assert "security" not in operation, (service, method, path)


def test_each_route_declares_the_errors_its_shape_implies(
    documents: dict[str, dict[str, Any]],
) -> None:
    def errors(service: str, method: str, path: str) -> set[str]:
        answers = documents[service]["paths"][path][method.lower()]["responses"]
        return {status for status in answers if int(status) >= 400}

    assert errors("intake", "POST", "/v1/screenings") == {
        "401", "403", "409", "413", "422", "429", "503"
    }  # fmt: skip
    assert errors("scheduler", "GET", "/v1/plans/{plan_id}") == {"401", "403", "404", "422", "429"}
    assert "404" not in errors("scheduler", "PUT", "/v1/sites/{site_id}"), "a PUT creates"
    assert "409" in errors("scheduler", "POST", "/v1/sessions/{session_id}/reschedule")
    assert errors("notifier", "GET", "/v1/webhooks") == {"401", "403", "429"}
    assert errors("intake", "GET", "/metrics") == {"401", "403", "429"}
    assert errors("intake", "GET", "/healthz") == set()


def test_the_conflict_reasons_are_one_enum(documents: dict[str, dict[str, Any]]) -> None:
    for document in documents.values():
        schemas = document["components"]["schemas"]
        assert schemas["ConflictReason"]["enum"] == [reason.value for reason in ConflictReason]
        assert "reason" in schemas["ConflictProblem"]["required"]


def test_the_notifier_declares_a_webhook_per_workflow_event(
    documents: dict[str, dict[str, Any]],
) -> None:
    webhooks = documents["notifier"]["webhooks"]
    workflow = [kind for kind in EventKind if kind not in COMPACTED]
    assert sorted(webhooks) == sorted(f"clinic.{kind.value}" for kind in workflow)
    for name, item in webhooks.items():
        post = item["post"]
        headers = {p["name"] for p in post["parameters"] if p["in"] == "header"}
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}, name
        body = post["requestBody"]["content"][CONTENT_TYPE]["schema"]["$ref"]
        schema = documents["notifier"]["components"]["schemas"][body.rsplit("/", 1)[1]]
        data_model = EVENT_MODELS[EventKind(name.removeprefix("clinic."))].__name__
        assert schema["properties"]["data"]["$ref"].endswith(f"/{data_model}"), name
        assert "2XX" in post["responses"]
        assert "webhook-delivery" in post["responses"]["default"]["headers"]


class Body(BaseModel):
    pregnant: bool


def raising(exc: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/boom")
    async def boom(body: Body) -> None:
        raise exc

    return app


@pytest.fixture(scope="module")
def declared() -> dict[str, Any]:
    document: dict[str, Any] = {}
    return {"refs": add_schemas(document, ANSWER_MODELS), "document": document}


@pytest.mark.parametrize(
    ("exc", "status", "model", "header"),
    [
        (NotFound("no plan"), 404, "Problem", None),
        (FieldRejected("site_id", "no such site"), 422, "ValidationProblem", None),
        (Conflict(ConflictReason.CANCELLED, "cancelled"), 409, "ConflictProblem", None),
        (
            Conflict(ConflictReason.IDEMPOTENCY_KEY_REUSED, "reused", field="Idempotency-Key"),
            409,
            "ConflictProblem",
            None,
        ),
        (Unauthorized(), 401, "Problem", ("www-authenticate", 'Bearer realm="clinicflow"')),
        (Forbidden("not your site"), 403, "Problem", None),
        (RateLimited(7), 429, "Problem", ("retry-after", "7")),
        (LockTimeout(), 503, "Problem", ("retry-after", "1")),
        (RuntimeError("pregnant=true"), 500, "Problem", None),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
async def test_each_error_is_a_problem_of_its_declared_shape(
    declared: dict[str, Any],
    exc: Exception,
    status: int,
    model: str,
    header: tuple[str, str] | None,
) -> None:
    answer = await post(raising(exc), {"pregnant": True})
    assert answer.status_code == status
    assert answer.headers["content-type"] == MEDIA_TYPE
    body = answer.json()
    components = declared["document"]["components"]
    jsonschema.validate(body, {**declared["refs"][model], "components": components})
    assert body["instance"] == "/boom"
    assert body["type"] == "https://clinicflow.example/problems/" + body["error"].replace("_", "-")
    assert "pregnant=true" not in answer.text
    if header is not None:
        assert answer.headers[header[0]] == header[1]


async def test_invalid_input_names_each_field_and_never_echoes_a_value(
    declared: dict[str, Any],
) -> None:
    answer = await post(raising(RuntimeError()), {"pregnant": "very much"})
    assert answer.status_code == 422
    body = answer.json()
    components = declared["document"]["components"]
    jsonschema.validate(body, {**declared["refs"]["ValidationProblem"], "components": components})
    assert [e["field"] for e in body["errors"]] == ["pregnant"]
    assert "very much" not in answer.text


async def test_a_body_that_is_not_even_text_is_invalid_json(declared: dict[str, Any]) -> None:
    headers = {"content-type": "application/json"}
    answer = await post(raising(RuntimeError()), content=b"\xff\xfe{", headers=headers)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    components = declared["document"]["components"]
    jsonschema.validate(body, {**declared["refs"]["ValidationProblem"], "components": components})
    assert body["errors"] == [
        {"field": "body", "message": "the body is not valid JSON (not UTF-8 text)"}
    ]


async def post(app: FastAPI, body: Any = None, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        return await client.post("/boom", json=body, **kwargs)


@pytest.fixture
async def scheduler() -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Any]]]:
    app = scheduler_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        yield client, app.openapi()


async def test_refusals_before_any_route_are_problems_too(
    scheduler: tuple[httpx.AsyncClient, dict[str, Any]],
) -> None:
    client, document = scheduler
    plan = f"/v1/plans/{uuid.uuid4()}"
    check_problem(document, "GET", "/v1/plans/{plan_id}", await client.get(plan))
    too_large = await client.post(f"/v1/sessions/{uuid.uuid4()}/cancel", content=b"x" * 65537)
    check_problem(document, "POST", "/v1/sessions/{session_id}/cancel", too_large)
    check_problem(document, "GET", "/metrics", await client.get("/metrics"))
    for answer, status in (
        (await client.get("/v2/nothing"), 404),
        (await client.delete("/healthz"), 405),
    ):
        assert (answer.status_code, answer.headers["content-type"]) == (status, MEDIA_TYPE)
        assert answer.json()["instance"] == answer.request.url.path
    assert (await client.delete("/healthz")).headers["allow"] == "GET"
