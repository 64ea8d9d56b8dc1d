"""What the OpenAPI documents declare beyond FastAPI's defaults: every error a route can really
answer, as problem details, and the notifier's outgoing webhooks.

FastAPI declares what a decorator names, plus a 422 of a shape the services never send. The
errors a route can give follow from what it is, so they are derived here for every route at
once: from the access guard's route table (401, 403, 429), a path parameter (404, except for a
PUT, which creates), the method (413 where `BodyLimit` reads bodies, 503 where a change can find
its resource's lease busy) and parameters or a body (422). A decorator adds only what no rule
can know, such as `responses={409: {}}` on a route that can conflict.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.envelope import CONTENT_TYPE
from shared.events import EVENT_MODELS, EventKind
from shared.http import BODY_METHODS
from shared.problems import MEDIA_TYPE, ConflictProblem, Problem, ValidationProblem
from shared.schemas import event_model

Document = dict[str, Any]
REF = "#/components/schemas/{model}"
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")

_RETRY_AFTER = {
    "description": "Seconds to wait before trying again.",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
ANSWERS: dict[int, tuple[str, type[Problem]]] = {
    401: ("No valid bearer token.", Problem),
    403: ("The token's role, or its sites, do not allow this.", Problem),
    404: ("No such resource, or it belongs to a site outside the token's sites.", Problem),
    409: (
        "The request cannot apply to the resource as it is now; `reason` says why.",
        ConflictProblem,
    ),
    413: ("The body is larger than the service accepts.", Problem),
    422: (
        "The request breaks the contract; `errors` names every field at fault.",
        ValidationProblem,
    ),
    429: ("Too many requests from this token; retry after `Retry-After` seconds.", Problem),
    503: (
        "Another change to this resource is in progress, or the service is still starting; "
        "retry after `Retry-After` seconds.",
        Problem,
    ),
}
ANSWER_MODELS = (Problem, ValidationProblem, ConflictProblem)
HEADERS: dict[int, Document] = {
    401: {
        "WWW-Authenticate": {
            "description": "`Bearer`: send `Authorization: Bearer <token>`.",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {"Retry-After": _RETRY_AFTER},
    503: {"Retry-After": _RETRY_AFTER},
}


def extend(app: FastAPI, change: Callable[[Document], None]) -> None:
    """Apply `change` to the document FastAPI generates; it keeps one until routes change."""
    generate = app.openapi
    changed: list[Document] = []

    def openapi() -> Document:
        document = generate()
        if not changed or changed[-1] is not document:
            change(document)
            changed[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def add_schemas(document: Document, models: Iterable[type[BaseModel]]) -> dict[str, Document]:
    """Put the models' JSON Schemas in `components`; returns a `$ref` for each model's name."""
    refs, top = models_json_schema([(m, "serialization") for m in models], ref_template=REF)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in top.get("$defs", {}).items():
        if schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas named {name} in one OpenAPI document")
    return {model.__name__: ref for (model, _), ref in refs.items()}


def answer(status: int, refs: dict[str, Document]) -> Document:
    description, model = ANSWERS.get(status, (HTTPStatus(status).phrase, Problem))
    declared: Document = {
        "description": description,
        "content": {MEDIA_TYPE: {"schema": refs[model.__name__]}},
    }
    if status in HEADERS:
        declared["headers"] = HEADERS[status]
    return declared


def errors_of(
    method: str, path: str, operation: Document, guarded: Collection[tuple[str, str]]
) -> set[int]:
    """The error statuses the route can answer (see the module's docstring)."""
    statuses = {
        int(status)
        for status, declared in operation["responses"].items()
        if status.isdigit() and int(status) >= 400 and "content" not in declared
    }
    if (method, path) in guarded:
        statuses |= {401, 403, 429}
    if "{" in path and method != "PUT":
        statuses.add(404)
    if method in BODY_METHODS:
        statuses.add(413)
    if operation.get("parameters") or "requestBody" in operation:
        statuses.add(422)
    if method in CHANGES:
        statuses.add(503)
    return statuses


def declare_problems(app: FastAPI, guarded: Collection[tuple[str, str]]) -> None:
    """Every route's error answers, in place of FastAPI's 422."""

    def change(document: Document) -> None:
        refs = add_schemas(document, ANSWER_MODELS)
        for name in FASTAPI_VALIDATION:
            document["components"]["schemas"].pop(name, None)
        for path, item in document.get("paths", {}).items():
            for method, operation in item.items():
                for status in errors_of(method.upper(), path, operation, guarded):
                    operation["responses"][str(status)] = answer(status, refs)

    extend(app, change)


_SIGNATURE = r"^v1,[A-Za-z0-9+/]+={0,2}( v1,[A-Za-z0-9+/]+={0,2})*$"
WEBHOOK_HEADERS = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "description": "The CloudEvent's `id`: the same on every retry, so a receiver can "
        "drop a repeat.",
        "schema": {"type": "string", "format": "uuid"},
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "description": "When this attempt was signed, in Unix seconds.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "description": "`v1,` + base64 of the HMAC-SHA256 of "
        "`<webhook-id>.<webhook-timestamp>.<body>` with the subscription's secret (Standard "
        "Webhooks); several, space-separated, for a day after a secret is rotated.",
        "schema": {"type": "string", "pattern": _SIGNATURE},
    },
]
WEBHOOK_ANSWERS = {
    "2XX": {"description": "Received: this delivery is done."},
    "default": {
        "description": "Any other status, a timeout or a refused connection: the delivery is "
        "retried with growing delays for at least 24 hours.",
        "headers": {
            "webhook-delivery": {
                "description": "`abort-message`: stop retrying this message.",
                "schema": {"type": "string", "enum": ["abort-message"]},
            }
        },
    },
}


def declare_webhooks(app: FastAPI, prefix: str, kinds: Iterable[EventKind]) -> None:
    """The `webhooks` section: one POST per event type an integrator can subscribe to, named
    as in a subscription's `events` (the topic, with the deployment's prefix)."""
    models = {kind: event_model(kind) for kind in kinds}

    def change(document: Document) -> None:
        refs = add_schemas(document, models.values())
        document["webhooks"] = {
            prefix + kind.value: {
                "post": {
                    "tags": ["webhooks"],
                    "summary": f"{prefix}{kind.value}, POSTed to each subscribed URL",
                    "description": EVENT_MODELS[kind].__doc__,
                    "operationId": f"webhook_{kind.value}",
                    "parameters": WEBHOOK_HEADERS,
                    "requestBody": {
                        "required": True,
                        "content": {
                            CONTENT_TYPE: {"schema": refs[model.__name__]},
                        },
                    },
                    "responses": WEBHOOK_ANSWERS,
                }
            }
            for kind, model in models.items()
        }

    extend(app, change)
