"""Run a service's ASGI app under uvicorn: what each `python -m services.<name>` calls.

uvloop and httptools, measured with `make bench`: the event loop carries the HTTP server, the
Kafka clients and MongoDB together, so a faster loop helps every service.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from types import FrameType
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
STARTUP_FAILURE: Final = 3
"""The exit status of `uvicorn.run` when the server could not start (its port taken)."""


class _Server(uvicorn.Server):
    """Sets `app.state.stopping` as soon as a signal asks the server to stop, so that
    long-lived responses (the ops page's event stream) end by themselves instead of holding
    the graceful shutdown for its whole timeout."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._app.state.stopping = True
        super().handle_exit(sig, frame)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    configure_logging(settings.service_name, settings.log_level)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        loop=LOOP,
        http=HTTP,
    )
    server = _Server(config, app)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def main(create_app: Callable[[S], FastAPI], settings: S) -> None:
    """Build the app and serve it; a missing key ends the process with a one-line reason."""
    try:
        app = create_app(settings)
    except MissingKeyError as exc:
        print(f"{settings.service_name} cannot start: {exc}", file=sys.stderr)
        sys.exit(2)
    serve(app, settings)
