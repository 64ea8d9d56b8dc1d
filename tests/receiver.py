"""A real webhook receiver on 127.0.0.1 for tests: records every POST, can fail on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks import Webhook as StandardWebhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scripts.infra import free_port


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]

    @property
    def event(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document

    def verified(self, secret: str) -> dict[str, Any]:
        """The event, once the official Standard Webhooks library verified its signature."""
        document: dict[str, Any] = StandardWebhook(secret).verify(self.body, self.headers)
        return document


@dataclass
class Receiver:
    port: int
    failures_left: int = 0
    received: list[Received] = field(default_factory=list)
    refused: int = 0
    held: asyncio.Event | None = None
    arrived: int = 0
    slow: float = 0.0
    """Each answer waits up to this many seconds (a random share of it)."""
    fail_ratio: float = 0.0
    """This share of POSTs is answered 503, at random."""
    down: bool = False
    """Answer every POST 503, as a receiver under maintenance."""
    abort: bool = False
    """Answer every POST 410 with `webhook-delivery: abort-message`."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: Request) -> Response:
        self.arrived += 1
        if self.held is not None:
            await self.held.wait()  # a receiver that takes its time, until the test lets go
        if self.slow:
            await asyncio.sleep(random.uniform(0, self.slow))
        if self.abort:
            self.refused += 1
            return Response(status_code=410, headers={"webhook-delivery": "abort-message"})
        if self.down or (self.fail_ratio and random.random() < self.fail_ratio):
            self.refused += 1
            return Response(status_code=503)
        if self.failures_left > 0:
            self.failures_left -= 1
            self.refused += 1
            return Response(status_code=503)
        self.received.append(Received(await request.body(), dict(request.headers)))
        return Response(status_code=204)


@contextlib.asynccontextmanager
async def webhook_receiver(failures: int = 0) -> AsyncIterator[Receiver]:
    receiver = Receiver(port=free_port(), failures_left=failures)
    app = Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=receiver.port, log_level="warning", lifespan="off"
        )
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield receiver
    finally:
        if receiver.held is not None:
            receiver.held.set()  # a test that failed midway must not leave POSTs hanging
        server.should_exit = True
        await task
