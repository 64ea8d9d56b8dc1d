"""JSON Schemas and the AsyncAPI document for integrators, generated from the event models.

`python -m shared.schemas` writes `docs/schemas/<kind>.v1.json` (one per event, envelope and
data), `docs/asyncapi.json` and the example records of `docs/integrators.md`;
`--check` fails when the committed files differ from the models.
The AsyncAPI document is FastStream's, from a broker that declares one publisher per topic.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from pydantic import create_model

from shared.envelope import CONTENT_TYPE, SCHEMA_VERSION, CloudEvent, build, dataschema_for
from shared.events import COMPACTED, EVENT_MODELS, PRODUCERS, EventKind
from shared.examples import EXAMPLES
from shared.topics import Topics

DOCS = Path(__file__).resolve().parent.parent / "docs"
TOPICS = Topics()


def event_model(kind: EventKind) -> type[CloudEvent]:
    """The envelope with `data` typed as the event's own model."""
    data_model = EVENT_MODELS[kind]
    name = "".join(part.title() for part in kind.value.split("_")) + "Event"
    model: type[CloudEvent] = create_model(
        name, __base__=CloudEvent, __doc__=data_model.__doc__, data=(data_model, ...)
    )
    return model


def json_schema(kind: EventKind) -> dict[str, Any]:
    schema = event_model(kind).model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": dataschema_for(kind),
        **schema,
    }


def asyncapi() -> dict[str, Any]:
    return asyncapi_for(TOPICS.prefix)


@functools.cache
def asyncapi_for(prefix: str) -> dict[str, Any]:
    """The AsyncAPI document for a deployment's topic prefix (served at `/asyncapi.json`)."""
    topics = Topics(prefix)
    broker = KafkaBroker("kafka:9092")
    for kind in EventKind:
        compacted = (
            " Compacted, keyed by the entity id; a null value erases it."
            if kind in COMPACTED
            else ""
        )
        broker.publisher(
            topics.name(kind),
            title=topics.name(kind),
            description=(
                f"Published by {PRODUCERS[kind]} as a CloudEvents 1.0 structured-mode record "
                f"(header content-type: {CONTENT_TYPE}).{compacted} "
                f"Failed consumption lands in {topics.dlq(kind)}."
            ),
            schema=event_model(kind),
        )
    spec = AsyncAPI(
        broker,
        title="clinicflow events",
        version=SCHEMA_VERSION,
        description="Topics that intake, scheduler and notifier publish; see docs/integrators.md.",
    )
    document: dict[str, Any] = json.loads(spec.to_specification().to_json())
    return document


EXAMPLES_START = "<!-- examples:start -->"
EXAMPLES_END = "<!-- examples:end -->"


def examples_markdown() -> str:
    """One full record per event, with fixed ids and times so the page is reproducible."""
    blocks = []
    for number, kind in enumerate(EventKind, start=1):
        record = build(
            EXAMPLES[kind],
            source=PRODUCERS[kind],
            prefix=TOPICS.prefix,
            event_id=uuid.UUID(int=number),
            correlation_id=uuid.UUID(int=1000 + number),
            causation_id=None
            if kind is EventKind.SCREENING_PASSED
            else uuid.UUID(int=2000 + number),
            time=datetime(2026, 3, 4, 10, 0, tzinfo=UTC),
        )
        document = json.loads(record.value or b"")
        pretty = json.dumps(document, indent=2, ensure_ascii=False)
        blocks.append(
            f"### `{record.topic}`\n\nKey `{record.key}`, published by {PRODUCERS[kind]}.\n\n"
            f"```json\n{pretty}\n```\n"
        )
    return "\n".join(blocks)


def integrators_page() -> str:
    page = (DOCS / "integrators.md").read_text()
    head, _, rest = page.partition(EXAMPLES_START)
    _, _, tail = rest.partition(EXAMPLES_END)
    return f"{head}{EXAMPLES_START}\n{examples_markdown()}{EXAMPLES_END}{tail}"


def rendered() -> dict[Path, str]:
    files = {
        DOCS / "schemas" / f"{kind.value}.{SCHEMA_VERSION}.json": json_schema(kind)
        for kind in EventKind
    }
    files[DOCS / "asyncapi.json"] = asyncapi()
    texts = {path: json.dumps(doc, indent=2, sort_keys=True) + "\n" for path, doc in files.items()}
    texts[DOCS / "integrators.md"] = integrators_page()
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.schemas", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        names = ", ".join(str(p.relative_to(DOCS.parent)) for p in stale)
        print(f"stale: {names}; run `python -m shared.schemas`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
