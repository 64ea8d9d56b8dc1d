"""The live ops page (issue 14): `GET /ops` serves it, `GET /v1/ops/stream` feeds it with
server-sent events, for the `ops` role (docs/adr/0016).

The scheduler serves it because it owns the sites, but the page reads nothing of the
scheduler's own: every replica follows the workflow topics and the DLQs with consumers of no
group (each replica needs every partition; nothing is committed) into a `shared.opsview`
board, and reads lag and DLQ depth from Kafka (`shared.lag`) only while a page is open.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from shared.access import Permission, Principal
from shared.auth import Access, Caller, bearer
from shared.envelope import EventError, parse
from shared.errors import Unauthorized
from shared.events import EventKind
from shared.lag import consumer_lag, service_groups, topic_depths
from shared.opsview import ERRORS_KEPT, WORKFLOW_KINDS, OpsBoard, dead_letter_error
from shared.settings import ServiceSettings
from shared.topics import DLQ_SUFFIX, Topics

log = logging.getLogger(__name__)

ROUTES = {("GET", "/v1/ops/stream"): Permission.READ_OPS}
PAGE = Path(__file__).with_name("static") / "ops.html"
THROTTLE_SECONDS = 1.0
"""At most one snapshot a second per stream, however fast events come."""
TICK_SECONDS = 1.0
"""How often an idle stream checks its token (a revoked key ends it) and the server stopping."""
HEARTBEAT_SECONDS = 15.0
LAG_SECONDS = 5.0
BATCH = 500
"""Records parsed between two yields to the event loop."""
_MAX_BACKOFF = 5.0

OnRecord = Callable[[Any], None]


class Authenticator(Protocol):
    """What a stream needs of `shared.auth.Access`: checking its token again."""

    async def authenticate(self, token: str) -> Principal: ...


class Changes:
    """A version number streams wait on: bumped on every change a snapshot would show."""

    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()

    def bump(self) -> None:
        self.version += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seen: int, timeout: float) -> None:  # noqa: ASYNC109
        """Return once the version differs from `seen`, or after `timeout` seconds."""
        if self.version == seen:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)


class EventStream(StreamingResponse):
    media_type = "text/event-stream"


class OpsPage:
    """The board of one scheduler replica, the workers that keep it, and its event streams."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.bootstrap = settings.kafka_bootstrap_servers
        self.topics = Topics(settings.topic_prefix)
        self.board = OpsBoard()
        self.changes = Changes()
        self.watchers = 0
        self._watched = asyncio.Event()

    @property
    def dead_letter_topics(self) -> list[str]:
        extra = [self.topics.access_keys, self.topics.audit]
        return [self.topics.dlq(kind) for kind in EventKind] + [t + DLQ_SUFFIX for t in extra]

    async def follow_workflows(self) -> None:
        """Every workflow event since the topics began, then each as it comes."""
        kinds = (*WORKFLOW_KINDS, EventKind.SITE_UPDATED)
        await follow(
            self.bootstrap,
            [self.topics.name(kind) for kind in kinds],
            self._on_event,
            client_id="clinicflow-ops-workflows",
            on_caught_up=self._on_caught_up,
        )

    async def follow_dead_letters(self) -> None:
        """The newest dead letters of every DLQ, then each new one."""
        await follow(
            self.bootstrap,
            self.dead_letter_topics,
            self._on_dead_letter,
            client_id="clinicflow-ops-dlq",
            tail=ERRORS_KEPT,
        )

    async def poll_lag(self) -> None:
        """Lag and DLQ depth every few seconds while a page is open: each read asks the
        brokers about every group and partition, which nobody needs when nobody looks."""
        groups = [g for named in service_groups(self.topics.prefix).values() for g in named]
        while True:
            await self._watched.wait()
            try:
                lags = await consumer_lag(self.bootstrap, groups)
                depths = await topic_depths(self.bootstrap, self.dead_letter_topics)
                if self.board.set_lag(lags, depths):
                    self.changes.bump()
            except Exception as exc:
                log.warning("ops page: cannot read lag from Kafka (%s)", type(exc).__name__)
            await asyncio.sleep(LAG_SECONDS)

    def _on_event(self, record: Any) -> None:
        if record.value is None:
            return
        try:
            event = parse(record.value, prefix=self.topics.prefix)
        except EventError:
            return  # the consumers dead-letter what they cannot read; the page shows that
        if self.board.apply(event):
            self.changes.bump()

    def _on_dead_letter(self, record: Any) -> None:
        error = dead_letter_error(list(record.headers or []))
        if error is not None and self.board.note_error(error):
            self.changes.bump()

    def _on_caught_up(self) -> None:
        if not self.board.caught_up:
            self.board.caught_up = True
            self.changes.bump()

    async def events(
        self, access: Authenticator, token: str, stopping: Callable[[], bool]
    ) -> AsyncIterator[str]:
        """A snapshot at once, then on every change (throttled), heartbeats in between; ends
        when the token stops being valid or the server stops."""
        self.watchers += 1
        self._watched.set()
        try:
            seen = -1
            quiet = 0.0
            while not stopping():
                try:
                    caller = await access.authenticate(token)
                except Unauthorized as exc:
                    yield frame("end", json.dumps({"reason": "unauthorized", "detail": str(exc)}))
                    return
                if self.changes.version != seen:
                    seen = self.changes.version
                    yield frame("snapshot", self.board.snapshot(caller.sees).model_dump_json())
                    quiet = 0.0
                    await asyncio.sleep(THROTTLE_SECONDS)
                elif quiet >= HEARTBEAT_SECONDS:
                    yield ": heartbeat\n\n"
                    quiet = 0.0
                else:
                    await self.changes.wait(seen, TICK_SECONDS)
                    quiet += TICK_SECONDS
        finally:
            self.watchers -= 1
            if not self.watchers:
                self._watched.clear()


def frame(event: str, data: str) -> str:
    """One server-sent event; `data` is one line of JSON."""
    return f"event: {event}\ndata: {data}\n\n"


async def follow(
    bootstrap: str,
    topics: Sequence[str],
    on_record: OnRecord,
    *,
    client_id: str,
    tail: int | None = None,
    on_caught_up: Callable[[], None] | None = None,
) -> None:
    """Read `topics` forever without a consumer group: from the beginning, or only the last
    `tail` records of each partition; after a lost connection, from where it stopped.
    `on_caught_up` is called once the end every partition had at start is read."""
    positions: dict[TopicPartition, int] = {}
    delay = 0.5
    while True:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
        )
        try:
            await consumer.start()
            delay = 0.5
            await _read(consumer, topics, on_record, positions, tail, on_caught_up)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("ops page: cannot read %s (%s)", client_id, type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
        await asyncio.sleep(delay)
        delay = min(delay * 2, _MAX_BACKOFF)


async def _read(
    consumer: AIOKafkaConsumer,
    topics: Sequence[str],
    on_record: OnRecord,
    positions: dict[TopicPartition, int],
    tail: int | None,
    on_caught_up: Callable[[], None] | None,
) -> None:
    # The services create every topic before their workers start; without assigned topics
    # this metadata request asks for all of them and creates none.
    await consumer._client.force_metadata_update()
    partitions = [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    consumer.assign(partitions)
    begin = await consumer.beginning_offsets(partitions)
    end = await consumer.end_offsets(partitions)
    for tp in partitions:
        if tp in positions:
            consumer.seek(tp, positions[tp])
        else:
            consumer.seek(tp, begin[tp] if tail is None else max(begin[tp], end[tp] - tail))
    pending = dict(end)
    while True:
        if on_caught_up is not None:
            for tp in list(pending):
                if await consumer.position(tp) >= pending[tp]:
                    del pending[tp]
            if not pending:
                on_caught_up()
                on_caught_up = None
        batch = await consumer.getmany(timeout_ms=500, max_records=BATCH)
        for tp, records in batch.items():
            for record in records:
                on_record(record)
                positions[tp] = record.offset + 1
        await asyncio.sleep(0)  # replaying history must not hold up the scheduler's requests


def _page() -> tuple[str, str]:
    """The page and a Content-Security-Policy that allows its own inline script and style
    (by hash) and connections to this origin, and nothing else."""
    html = PAGE.read_text()

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        digests = (base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() for b in bodies)
        return " ".join(f"'sha256-{d}'" for d in digests)

    policy = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html, policy


def install(app: FastAPI, page: OpsPage) -> None:
    """`GET /ops` open, like `/docs`: it is a static shell that holds no data and asks for a
    key; `GET /v1/ops/stream` behind the app's guard, like every `/v1` route."""
    html, policy = _page()
    headers = {
        "Content-Security-Policy": policy,
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }

    @app.get("/ops", include_in_schema=False)
    async def ops_page() -> HTMLResponse:
        return HTMLResponse(html, headers=headers)

    access: Access = app.state.access
    api = APIRouter(prefix="/v1/ops", tags=["operations"])

    @api.get(
        "/stream",
        response_class=EventStream,
        summary="The live ops page's feed (ops role)",
        description="Server-sent events: `snapshot` (an `OpsSnapshot` as JSON) at once and on "
        "every change, at most one a second; a comment line as heartbeat; `end` when the "
        "token is revoked or expires. Counts of the caller's sites only; no personal data.",
        responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    )
    async def stream(
        request: Request,
        _caller: Caller,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> EventStream:
        assert credentials is not None  # the guard refused the request otherwise
        state = request.app.state

        def stopping() -> bool:
            return bool(getattr(state, "stopping", False))

        events = page.events(access, credentials.credentials, stopping)
        return EventStream(events, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    app.include_router(api, dependencies=[Depends(access.guard)])
