"""An in-memory view of a compacted topic (`clinic.site_updated`, `clinic.client_contact`).

SPEC section 1: a service that keeps a view of a compacted topic answers `/readyz` 200 only once
it has read that topic to its end, so that a ready intake knows every site the scheduler has
published. `CompactedView.caught_up` is that condition: the end offset of every partition is
taken once, when the view starts, and the view is caught up when it has read up to all of them.
Records published later are applied as they come, but do not hold readiness back.

The view reads with a plain consumer that has no group: it assigns itself every partition and
reads from the beginning each time the process starts. A consumer group would share the
partitions between a service's replicas and remember how far the group got, while every replica
needs the whole topic in its own memory. Nothing is committed, so nothing in Kafka changes when
a replica starts, stops or dies.

The topic is a log of full states keyed by id, so the latest record for a key wins and a
tombstone (a null value) removes the key. A record that cannot be parsed is logged (where it is,
never what it holds: contact details must not reach logs), handed to `on_invalid` (the service
dead-letters it once, `shared.deadletter`) and skipped: one bad record must not stop every later
site or contact from reaching the view.

Kafka may be down when the service starts, and the topic may not exist yet (the service that
creates it may start later); both are waited for with backoff. If the connection fails after the
view started, it resumes where it stopped rather than starting over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.deadletter import RawRecord
from shared.envelope import EventError

log = logging.getLogger(__name__)

T = TypeVar("T")

OnChange = Callable[[str, T | None], Awaitable[None]]
OnInvalid = Callable[[RawRecord, Exception], Awaitable[None]]

_MAX_BACKOFF = 5.0
_DLQ_TRIES = 5
_POLL_MS = 500


class CompactedView(Generic[T]):
    """The latest value of every key of one compacted topic, kept up to date by `run()`."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        parse: Callable[[bytes], T],
        *,
        on_change: OnChange[T] | None = None,
        client_id: str = "clinicflow-view",
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self._parse = parse
        self._on_change = on_change
        self.on_invalid: OnInvalid | None = None
        self._client_id = client_id
        self._values: dict[str, T] = {}
        self._caught_up = asyncio.Event()
        # The next offset to read per partition, so that a reconnect resumes instead of rereading.
        self._next_offsets: dict[TopicPartition, int] = {}

    # -- reading the view ------------------------------------------------------------------

    @property
    def caught_up(self) -> bool:
        """Whether the view has read every partition up to its end as it was at start."""
        return self._caught_up.is_set()

    async def wait_caught_up(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until the view is caught up; False if `timeout` seconds passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._caught_up.wait()
        except TimeoutError:
            return False
        return True

    def get(self, key: str) -> T | None:
        return self._values.get(key)

    def items(self) -> dict[str, T]:
        """A copy of the whole view, key to latest value."""
        return dict(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)

    # -- keeping it up to date -------------------------------------------------------------

    async def run(self) -> None:
        """Read the topic forever; cancel the task running it to stop."""
        delay = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                client_id=self._client_id,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            try:
                await consumer.start()
                delay = 0.5
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # One line per attempt, no traceback: Kafka being down is expected at start.
                log.warning(
                    "view of %s: cannot read from Kafka (%s), retrying in %.1fs",
                    self.topic,
                    _describe(exc),
                    delay,
                )
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        partitions = await self._wait_for_topic(consumer)
        consumer.assign(partitions)
        fresh = [tp for tp in partitions if tp not in self._next_offsets]
        for tp in partitions:
            if tp in self._next_offsets:
                consumer.seek(tp, self._next_offsets[tp])
        if fresh:
            await consumer.seek_to_beginning(*fresh)

        pending: dict[TopicPartition, int] = {}
        if not self.caught_up:
            ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
            pending = dict(ends)
            log.info("view of %s: reading up to %s", self.topic, _offsets(ends))
        while True:
            if pending:
                await self._check_caught_up(consumer, pending)
            batch: dict[TopicPartition, list[Any]] = await consumer.getmany(timeout_ms=_POLL_MS)
            for tp, records in batch.items():
                for record in records:
                    await self._apply(record)
                    self._next_offsets[tp] = record.offset + 1

    async def _invalid(self, record: Any, error: Exception) -> None:
        """Hand a record the view skips to `on_invalid`, retrying a failing DLQ a few times;
        after that the failure propagates and the view reconnects and reads it again."""
        if self.on_invalid is None:
            return
        raw = RawRecord(record.topic, record.partition, record.offset, record.key,
                        record.value, list(record.headers or []))  # fmt: skip
        await _dead_letter_with_retries(self.on_invalid, raw, error)

    async def _wait_for_topic(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """The topic's partitions, once the topic exists; polls cluster metadata with backoff."""
        delay = 0.2
        logged = False
        while True:
            # aiokafka has no public call that refreshes the metadata `partitions_for_topic`
            # reads. Without assigned topics this asks for every topic, which never creates one.
            await consumer._client.force_metadata_update()
            found: set[int] | None = consumer.partitions_for_topic(self.topic)
            if found:
                return [TopicPartition(self.topic, p) for p in sorted(found)]
            if not logged:
                log.info("view of %s: waiting for the topic to be created", self.topic)
                logged = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)

    async def _check_caught_up(
        self, consumer: AIOKafkaConsumer, pending: dict[TopicPartition, int]
    ) -> None:
        for tp, end in list(pending.items()):
            # position() skips compacted-away offsets, which records' offsets cannot show.
            if await consumer.position(tp) >= end:
                del pending[tp]
        if not pending:
            self._caught_up.set()
            log.info("view of %s: caught up with %d keys", self.topic, len(self._values))

    async def _apply(self, record: Any) -> None:
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        if record.key is None:
            log.error("view of %s: skipped a record without a key at %s", self.topic, where)
            await self._invalid(record, EventError("a record without a key"))
            return
        try:
            key = bytes(record.key).decode()
        except UnicodeDecodeError:
            log.error(
                "view of %s: skipped a record whose key is not UTF-8 at %s", self.topic, where
            )
            await self._invalid(record, EventError("a key that is not UTF-8"))
            return
        value: T | None
        if record.value is None:
            value = None
            self._values.pop(key, None)
        else:
            try:
                value = self._parse(record.value)
            except Exception as exc:
                # EventError messages name fields, never values; other parsers' messages may
                # quote the input they rejected, so only their type is logged.
                reason = str(exc) if isinstance(exc, EventError) else type(exc).__name__
                log.error(
                    "view of %s: skipped a record that does not parse at %s, key %s: %s",
                    self.topic,
                    where,
                    key,
                    reason,
                )
                await self._invalid(record, EventError(reason))
                return
            self._values[key] = value
        if self._on_change is not None:
            # Tombstones are passed on even for keys the view never held: the record they erase
            # may be compacted away already while the caller still holds a copy of it.
            try:
                await self._on_change(key, value)
            except Exception:
                log.exception(
                    "view of %s: on_change failed for key %s at %s", self.topic, key, where
                )


async def _dead_letter_with_retries(
    on_invalid: OnInvalid, record: RawRecord, error: Exception
) -> None:
    delay = 0.5
    for _ in range(_DLQ_TRIES - 1):
        try:
            await on_invalid(record, error)
            return
        except Exception as exc:
            log.warning("dead-lettering %s failed (%s); retrying", record.where, _describe(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)
    await on_invalid(record, error)


def _describe(exc: Exception) -> str:
    """`Type: message` once (aiokafka's messages already start with their type)."""
    name, message = type(exc).__name__, str(exc)
    if message.startswith(name):
        return message
    return f"{name}: {message}" if message else name


def _offsets(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.partition}:{offset}" for tp, offset in sorted(offsets.items()))
