"""Check an error answer against what a service's OpenAPI document declares for it."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema

from shared.problems import MEDIA_TYPE


def check_problem(
    document: dict[str, Any], method: str, template: str, answer: httpx.Response
) -> None:
    """The answer's status is declared for the route, as problem details whose schema its body
    matches, and `instance` is the path that was asked for."""
    declared = document["paths"][template][method.lower()]["responses"]
    where = f"{method} {template} answered {answer.status_code}: {answer.text}"
    assert str(answer.status_code) in declared, where
    assert answer.headers["content-type"] == MEDIA_TYPE, where
    schema = declared[str(answer.status_code)]["content"][MEDIA_TYPE]["schema"]
    body = answer.json()
    jsonschema.validate(body, {**schema, "components": document["components"]})
    assert body["instance"] == answer.request.url.path, where
    assert body["status"] == answer.status_code, where
