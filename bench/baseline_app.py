"""The baselines of intake's throughput, served like the services are (uvicorn, same options):

(a) a bare FastAPI app that validates the body with intake's own `SubmitScreening` and answers
201; (b) with `--mongodb-uri`, the same plus one `insert_one` of the validated command (a
document the size of the request) into that MongoDB. What any HTTP service on this box can do,
so that intake's figure can be judged. (b) drops its database when it stops.

    python -m bench.baseline_app --port N [--mongodb-uri URI]
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from services.intake.commands import SubmitScreening
from shared.serve import HTTP, LOOP

DATABASE = "bench_baseline"


def create_app(mongodb_uri: str | None) -> FastAPI:
    mongo: AsyncMongoClient[dict[str, Any]] | None = (
        AsyncMongoClient(mongodb_uri, tz_aware=True) if mongodb_uri else None
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if mongo is None:
            yield
            return
        await mongo.admin.command("ping")
        yield
        await mongo.drop_database(DATABASE)
        await mongo.close()

    app = FastAPI(title="bench baseline", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/screenings", status_code=201)
    async def submit(command: SubmitScreening) -> dict[str, str]:
        screening_id = str(uuid.uuid4())
        if mongo is not None:
            document = command.model_dump(mode="json")
            await mongo[DATABASE]["screenings"].insert_one(
                {"_id": screening_id, "received_at": datetime.now(UTC), **document}
            )
        return {"screening_id": screening_id, "client_id": uuid.uuid4().hex, "outcome": "passed"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_app", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mongodb-uri")
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.mongodb_uri),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        loop=LOOP,
        http=HTTP,
    )


if __name__ == "__main__":
    main()
