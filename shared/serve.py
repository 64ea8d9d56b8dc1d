"""Run a service's ASGI app under uvicorn: what each `python -m services.<name>` calls.

uvloop and httptools, measured with `make bench`: the event loop carries the HTTP server, the
Kafka clients and MongoDB together, so a faster loop helps every service.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Final, TypeVar

import uvicorn
from fastapi import FastAPI

from shared.keys import MissingKeyError
from shared.logging import configure_logging
from shared.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)

LOOP: Final = "uvloop"
HTTP: Final = "httptools"
"""Event loop and HTTP parser of every service (the baselines of `bench/` use the same)."""


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    configure_logging(settings.service_name, settings.log_level)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        loop=LOOP,
        http=HTTP,
    )


def main(create_app: Callable[[S], FastAPI], settings: S) -> None:
    """Build the app and serve it; a missing key ends the process with a one-line reason."""
    try:
        app = create_app(settings)
    except MissingKeyError as exc:
        print(f"{settings.service_name} cannot start: {exc}", file=sys.stderr)
        sys.exit(2)
    serve(app, settings)
