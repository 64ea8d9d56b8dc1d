"""The committed schemas and AsyncAPI document match the models, and describe real events."""

from __future__ import annotations

import json

import jsonschema
import pytest

from shared import schemas
from shared.envelope import build
from shared.events import EventKind
from shared.examples import EXAMPLES


def test_committed_docs_match_the_models() -> None:
    assert schemas.main(["--check"]) == 0, "run `python -m shared.schemas` and commit docs/"


@pytest.mark.parametrize("kind", list(EventKind))
def test_each_schema_accepts_a_real_event_and_rejects_a_broken_one(kind: EventKind) -> None:
    schema = json.loads((schemas.DOCS / "schemas" / f"{kind.value}.v1.json").read_text())
    record = build(EXAMPLES[kind], source="intake", prefix="clinic.")
    document = json.loads(record.value or b"")
    jsonschema.validate(document, schema)
    del document["data"][next(iter(document["data"]))]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema)


def test_asyncapi_lists_every_topic_with_its_payload() -> None:
    document = json.loads((schemas.DOCS / "asyncapi.json").read_text())
    assert document["asyncapi"].startswith("3.")
    for kind in EventKind:
        assert f"clinic.{kind.value}" in document["channels"]
    assert "SessionCompletedEvent" in document["components"]["schemas"]
