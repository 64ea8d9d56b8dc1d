"""What the notifier does: materialise timelines, release due steps, deliver them, and fan
events out to integrators' webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from prometheus_client import Counter

from services.notifier.adapters.channels import Channel, DeliveryError, Message
from services.notifier.adapters.secrets import SecretBox, new_secret
from services.notifier.adapters.store import NotifierStore
from services.notifier.adapters.webhooks import Aborted, WebhookSender
from services.notifier.domain.steps import (
    CLIENT_RETRIES,
    WEBHOOK_RETRIES,
    Delivery,
    DeliveryStatus,
    RetrySchedule,
    Step,
    StepStatus,
)
from services.notifier.domain.timeline import PlannedStep, after_session, before_session
from services.notifier.domain.webhooks import SigningSecret, Webhook
from services.notifier.metrics import TIMER_LAG
from shared import tracing
from shared.aggregate import Aggregate
from shared.envelope import Event
from shared.events import (
    AftercareDue,
    ClientContact,
    SessionCancelled,
    SessionCompleted,
    SessionScheduled,
    SiteUpdated,
)
from shared.ids import Ids
from shared.keys import InvalidToken
from shared.locks import LockTimeout
from shared.uow import AggregateStore, UnitOfWork
from shared.vocabulary import AftercareStep, Locale

log = logging.getLogger(__name__)
A = TypeVar("A", bound=Aggregate)
STEPS_RELEASED = Counter("clinicflow_aftercare_released_total", "Aftercare steps that fell due.")
DELIVERIES_DONE = Counter(
    "clinicflow_deliveries_total",
    "Delivery attempts, by channel and outcome.",
    ["channel", "outcome"],
)
WEBHOOKS_DISABLED = Counter(
    "clinicflow_webhooks_disabled_total",
    "Webhook subscriptions disabled because every delivery failed for 5 days.",
)


class Contacts(Protocol):
    def get(self, key: str) -> ClientContact | None: ...


class Sites(Protocol):
    def get(self, key: str) -> SiteUpdated | None: ...


@dataclass
class NotifierContext:
    store: NotifierStore
    uow: UnitOfWork
    contacts: Contacts
    sites: Sites
    channels: Sequence[Channel]
    webhooks: WebhookSender
    secrets: SecretBox
    ids: Ids
    client_retries: RetrySchedule = CLIENT_RETRIES
    webhook_retries: RetrySchedule = WEBHOOK_RETRIES
    batch: int = 200
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    spread: Callable[[], float] = field(default=lambda: random.uniform(-1, 1))

    def locale_of(self, client_id: str) -> Locale:
        contact = self.contacts.get(client_id)
        return contact.locale if contact else Locale.EN


Handler = Callable[[NotifierContext, Event], Awaitable[None]]


def aftercare_id(ids: Ids, session_id: uuid.UUID | str, step: AftercareStep) -> str:
    return str(ids.uuid("aftercare", session_id, step.value))


def _step(
    ctx: NotifierContext,
    planned: PlannedStep,
    event: Event,
    *,
    session_id: uuid.UUID,
    plan_id: uuid.UUID,
    locale: Locale,
) -> Step:
    return Step(
        aftercare_id=aftercare_id(ctx.ids, session_id, planned.step),
        client_id=event.data.client_id,  # type: ignore[attr-defined]
        site_id=event.envelope.siteid,
        plan_id=str(plan_id),
        session_id=str(session_id),
        step=planned.step,
        due_at=planned.due_at,
        locale=locale,
        title=planned.title,
        instructions=list(planned.instructions),
        correlation_id=event.correlation_id,
        cause_id=event.id,
        created_at=ctx.clock(),
        traceparent=tracing.traceparent(),
    )


async def on_session_completed(ctx: NotifierContext, event: Event) -> None:
    """Materialise the session's aftercare timeline: every step stored with its due time."""
    completed = event.data
    assert isinstance(completed, SessionCompleted)
    if await ctx.store.is_erased(completed.client_id):
        return
    locale = ctx.locale_of(completed.client_id)
    steps = [
        _step(ctx, planned, event, session_id=completed.session_id, plan_id=completed.plan_id,
              locale=locale)
        for planned in after_session(completed, locale)
    ]  # fmt: skip
    await ctx.uow.insert_new(ctx.store.step_store, steps)
    await fan_out(ctx, event)


async def on_session_scheduled(ctx: NotifierContext, event: Event) -> None:
    """Plan, or move, the reminder two days before a follow-up session."""
    scheduled = event.data
    assert isinstance(scheduled, SessionScheduled)
    await fan_out(ctx, event)
    if scheduled.sequence < 2 or await ctx.store.is_erased(scheduled.client_id):
        return
    locale = ctx.locale_of(scheduled.client_id)
    site = ctx.sites.get(scheduled.site_id)
    planned = before_session(
        scheduled.starts_at, site.timezone if site else "UTC", locale, now=ctx.clock()
    )
    reminder = _step(ctx, planned, event, session_id=scheduled.session_id,
                     plan_id=scheduled.plan_id, locale=locale)  # fmt: skip
    if await ctx.uow.insert_new(ctx.store.step_store, [reminder]):
        return
    async with ctx.uow.change(ctx.store.step_store, reminder.aftercare_id) as step:
        if step is not None:
            step.move(planned)


async def on_session_cancelled(ctx: NotifierContext, event: Event) -> None:
    cancelled = event.data
    assert isinstance(cancelled, SessionCancelled)
    await fan_out(ctx, event)
    step_id = aftercare_id(ctx.ids, cancelled.session_id, AftercareStep.NEXT_SESSION)
    async with ctx.uow.change(ctx.store.step_store, step_id) as step:
        if step is not None:
            step.cancel()


async def release_due_steps(ctx: NotifierContext) -> int:
    """The durable timer: publish `aftercare_due` for every step whose time has come.

    Each step is released under its lease and re-read there, so two replicas never both
    release one, and a replica that dies holding a lease leaves the step to the next one once
    the lease expires.
    """
    now = ctx.clock()
    query = {"status": StepStatus.SCHEDULED.value, "due_at": {"$lte": now}}
    due = ctx.store.steps.find(query, {"traceparent": 1}).sort("due_at", 1).limit(ctx.batch)
    released = 0
    for document in await due.to_list():
        try:
            with tracing.span(
                "release aftercare step",
                parent={"traceparent": document.get("traceparent")},
                attributes={"clinicflow.aftercare_id": str(document["_id"])},
            ):
                async with ctx.uow.change(ctx.store.step_store, document["_id"], wait=0) as step:
                    if step is not None and step.release(now):
                        released += 1
                        STEPS_RELEASED.inc()
                        TIMER_LAG.observe((now - step.due_at).total_seconds())
        except LockTimeout:
            continue  # another replica holds it now
    return released


SETTLE_AFTER = timedelta(seconds=30)
"""A step still `due` this long after its release is settled by `tidy` if its deliveries ended."""
FINISHED_STEPS = [StepStatus.DELIVERED.value, StepStatus.FAILED.value, StepStatus.CANCELLED.value]


async def tidy(ctx: NotifierContext) -> int:
    """Finish what a crash cut short; how many finished aggregates it moved to history.

    A delivery is settled on its step in a second change, after its own: a process killed in
    between leaves the step `due` for ever, although the client got the message. And a
    finished step or delivery is written in place before it moves to history: a kill there
    leaves it in the live collection, where only a load completes the move. Both collections
    hold only live work (bounded), so looking for these costs little.
    """
    stale = {"status": StepStatus.DUE.value, "released_at": {"$lt": ctx.clock() - SETTLE_AFTER}}
    for step in await ctx.store.steps.find(stale, {"event_id": 1}).limit(ctx.batch).to_list():
        if step.get("event_id"):
            with contextlib.suppress(LockTimeout):
                await _settle_step(ctx, str(step["_id"]), str(step["event_id"]))
    finished_steps = {"status": {"$in": FINISHED_STEPS}}
    finished_deliveries = {"status": {"$ne": DeliveryStatus.PENDING.value}}
    return await _complete_moves(ctx.uow, ctx.store.step_store, finished_steps, ctx.batch) + (
        await _complete_moves(ctx.uow, ctx.store.delivery_store, finished_deliveries, ctx.batch)
    )


async def _complete_moves(
    uow: UnitOfWork, store: AggregateStore[A], finished: dict[str, Any], batch: int
) -> int:
    """Load each finished aggregate left in the live collection: loading completes its move."""
    moved = 0
    for found in await store.collection.find(finished, {"_id": 1}).limit(batch).to_list():
        with contextlib.suppress(LockTimeout):
            async with uow.change(store, str(found["_id"]), wait=0):
                moved += 1
    return moved


async def on_aftercare_due(ctx: NotifierContext, event: Event) -> None:
    """Queue the step's delivery on every channel, and to subscribed webhooks. Which channels
    can reach the client is decided when each sends (`_send`), from the contact known then: a
    contact that arrives late still gets its email and SMS."""
    due = event.data
    assert isinstance(due, AftercareDue)
    await fan_out(ctx, event)
    if await ctx.store.is_erased(due.client_id):
        return
    now = ctx.clock()
    deliveries = [
        Delivery(
            delivery_id=f"{event.id}:{channel.name}",
            kind="client",
            channel=channel.name,
            event_id=event.id,
            aftercare_id=str(due.aftercare_id),
            client_id=due.client_id,
            next_attempt_at=now,
            created_at=now,
            traceparent=tracing.traceparent(),
        )
        for channel in ctx.channels
    ]
    await ctx.uow.insert_new(ctx.store.delivery_store, deliveries)


async def fan_out(ctx: NotifierContext, event: Event) -> None:
    """Queue the event for every webhook subscribed to its type and covering its site.

    Nothing about an erased client goes out any more, to integrators either (SPEC section 6).
    """
    subscriptions = await ctx.store.subscribed(event.envelope.type, event.envelope.siteid)
    if not subscriptions:
        return
    client_id = getattr(event.data, "client_id", None)
    if client_id is not None and await ctx.store.is_erased(client_id):
        return
    now = ctx.clock()
    deliveries = [
        Delivery(
            delivery_id=f"{event.id}:{subscription.webhook_id}",
            kind="webhook",
            channel="webhook",
            webhook_id=subscription.webhook_id,
            event_id=event.id,
            event_type=event.envelope.type,
            aftercare_id=str(getattr(event.data, "aftercare_id", "")) or None,
            client_id=client_id,
            body=event.raw.decode(),
            next_attempt_at=now,
            created_at=now,
            traceparent=tracing.traceparent(),
        )
        for subscription in subscriptions
    ]
    await ctx.uow.insert_new(ctx.store.delivery_store, deliveries)


class Lanes:
    """Deliveries in flight, by receiver: each client channel and each webhook has its own
    bounded lane, so a slow or failing receiver delays nobody else, the clients' own messages
    least of all (issue 12). Attempts run as tasks of the worker's task group: stopping the
    worker stops them, and their leases expire for another replica."""

    def __init__(self, per_client_channel: int = 16, per_webhook: int = 4) -> None:
        self.limits = {"client": per_client_channel, "webhook": per_webhook}
        self.flying: dict[str, set[str]] = {}

    @staticmethod
    def lane_of(document: dict[str, object]) -> str:
        if document.get("kind") == "webhook":
            return f"webhook:{document.get('webhook_id')}"
        return f"client:{document.get('channel')}"

    def busy(self, delivery_id: str) -> bool:
        return any(delivery_id in ids for ids in self.flying.values())

    def in_flight(self) -> list[str]:
        return [delivery_id for ids in self.flying.values() for delivery_id in ids]

    def room(self, lane: str) -> bool:
        limit = self.limits["webhook" if lane.startswith("webhook:") else "client"]
        return len(self.flying.get(lane, ())) < limit

    def full(self, kind: str) -> list[str]:
        """The receivers of `kind` (channel names or webhook ids) whose lane has no room."""
        return [
            lane.split(":", 1)[1]
            for lane in self.flying
            if lane.startswith(f"{kind}:") and not self.room(lane)
        ]


DELIVERY_FIELDS = {"_id": 1, "kind": 1, "channel": 1, "webhook_id": 1}


async def start_due_deliveries(ctx: NotifierContext, lanes: Lanes, group: asyncio.TaskGroup) -> int:
    """Start an attempt for every due delivery whose lane has room; how many started.

    Client deliveries and webhook deliveries are read apart, and attempts in flight and
    receivers whose lane is full are left out of the read, so no receiver's backlog hides
    another's due messages from the batch."""
    now = ctx.clock()
    started = 0
    for kind, receiver in (("client", "channel"), ("webhook", "webhook_id")):
        query = {"status": DeliveryStatus.PENDING.value, "next_attempt_at": {"$lte": now}}
        query |= {"kind": kind} | ({receiver: {"$nin": full}} if (full := lanes.full(kind)) else {})
        if flying := lanes.in_flight():  # still pending, and would take the batch's places
            query["_id"] = {"$nin": flying}
        due = ctx.store.deliveries.find(query, DELIVERY_FIELDS)
        for document in await due.sort("next_attempt_at", 1).limit(ctx.batch).to_list():
            delivery_id, lane = str(document["_id"]), Lanes.lane_of(document)
            if lanes.busy(delivery_id) or not lanes.room(lane):
                continue
            lanes.flying.setdefault(lane, set()).add(delivery_id)
            group.create_task(_deliver(ctx, lanes, lane, delivery_id))
            started += 1
    return started


async def run_deliveries(ctx: NotifierContext, interval: float) -> None:
    """The delivery worker: start due attempts as lanes free up, check again every `interval`."""
    lanes = Lanes()
    async with asyncio.TaskGroup() as group:
        while True:
            try:
                started = await start_due_deliveries(ctx, lanes, group)
            except Exception:
                log.exception("reading due deliveries failed; retrying")
                started = 0
            await asyncio.sleep(interval if not started else 0.05)


async def _deliver(ctx: NotifierContext, lanes: Lanes, lane: str, delivery_id: str) -> None:
    try:
        await deliver_one(ctx, delivery_id)
    except Exception:
        log.exception("delivery %s failed; it is retried", delivery_id)
    finally:
        lanes.flying[lane].discard(delivery_id)


async def deliver_one(ctx: NotifierContext, delivery_id: str) -> bool:
    """Attempt one delivery under its lease and record the attempt; False if it was not due
    here (another replica holds it, or it is no longer pending)."""
    try:
        async with ctx.uow.change(ctx.store.delivery_store, delivery_id, wait=0) as d:
            if d is None or d.status is not DeliveryStatus.PENDING:
                return False
            with tracing.span(
                f"deliver {d.channel}",
                parent={"traceparent": d.traceparent},
                attributes={
                    "clinicflow.delivery_id": d.delivery_id,
                    "clinicflow.event_id": d.event_id,
                },
            ) as span:
                await _attempt(ctx, d)
                if span is not None:
                    span.set_attribute("clinicflow.delivery_status", d.status.value)
    except LockTimeout:
        return False
    if d.kind == "client" and d.status is not DeliveryStatus.PENDING and d.aftercare_id:
        await _settle_step(ctx, d.aftercare_id, d.event_id)
    return True


async def _attempt(ctx: NotifierContext, delivery: Delivery) -> None:
    started = ctx.clock()
    schedule = ctx.webhook_retries if delivery.kind == "webhook" else ctx.client_retries
    try:
        await _send(ctx, delivery, started)
        delivery.attempted(started, error=None, permanent=False, schedule=schedule)
    except (_Cancelled, Aborted) as why:
        delivery.cancel(started, str(why))
    except DeliveryError as exc:
        delivery.attempted(started, error=str(exc)[:500], permanent=exc.permanent,
                           schedule=schedule, spread=ctx.spread())  # fmt: skip
    DELIVERIES_DONE.labels(delivery.channel, delivery.status.value).inc()


class _Cancelled(Exception):
    """Nothing is to be sent on this delivery: the client was erased, or gave no address for
    its channel."""


async def _send(ctx: NotifierContext, delivery: Delivery, now: datetime) -> None:
    if delivery.client_id is not None and await ctx.store.is_erased(delivery.client_id):
        raise _Cancelled("client erased")
    if delivery.kind == "webhook":
        await _post(ctx, delivery, now)
        return
    step = await ctx.store.step_store.get(delivery.aftercare_id or "")
    if step is None:
        raise DeliveryError("the aftercare step is gone", permanent=True)
    channel = next((c for c in ctx.channels if c.name == delivery.channel), None)
    if channel is None:
        raise DeliveryError(f"channel {delivery.channel} is not configured", permanent=True)
    contact = ctx.contacts.get(step.client_id)
    if channel.name != "log":
        if contact is None:  # retried with backoff: it fails after the last attempt
            raise DeliveryError("no contact details for this client yet", permanent=False)
        if not channel.accepts(contact):
            raise _Cancelled(f"the client gave no address for {channel.name}")
    message = Message(
        aftercare_id=step.aftercare_id,
        client_id=step.client_id,
        step=step.step,
        locale=step.locale,
        title=step.title,
        instructions=list(step.instructions),
        due_at=step.due_at,
    )
    await channel.send(message, contact or _anonymous(step))


async def _post(ctx: NotifierContext, delivery: Delivery, now: datetime) -> None:
    """POST the event to its webhook, signed with every secret that signs at `now`, and keep
    the subscription's health: one that fails for days is disabled (`Webhook.failed`)."""
    subscription = await ctx.store.webhook_store.get(delivery.webhook_id or "")
    if subscription is None or not subscription.active:
        raise DeliveryError("the webhook was removed", permanent=True)
    if subscription.disabled_at is not None:
        raise DeliveryError("the webhook is disabled: recover it to have this sent", permanent=True)
    secrets = []
    for sealed in subscription.signing(now):
        with contextlib.suppress(InvalidToken):  # sealed under a key no longer configured
            secrets.append(ctx.secrets.open(sealed))
    if not secrets:
        raise DeliveryError(
            "the webhook secret cannot be opened with CLINICFLOW_WEBHOOK_KEY", permanent=False
        )
    try:
        await ctx.webhooks.post(
            subscription.url,
            secrets,
            (delivery.body or "").encode(),
            event_id=delivery.event_id,
            event_type=delivery.event_type or "",
            now=now,
        )
    except Aborted:
        raise
    except DeliveryError:
        await _keep_health(ctx, subscription, ok=False, now=now)
        raise
    if subscription.failing_since is not None:  # the common case writes nothing
        await _keep_health(ctx, subscription, ok=True, now=now)


async def _keep_health(ctx: NotifierContext, seen: Webhook, *, ok: bool, now: datetime) -> None:
    """Record on the subscription that a delivery got through or failed. Best effort: a busy
    subscription is updated by the next attempt."""
    with contextlib.suppress(LockTimeout):
        async with ctx.uow.change(ctx.store.webhook_store, seen.webhook_id, wait=1) as webhook:
            if webhook is None:
                return
            if ok:
                webhook.delivered()
            elif webhook.failed(now) and webhook.disabled_at is not None:
                WEBHOOKS_DISABLED.inc()
                log.warning(
                    "webhook %s disabled: %s; its owner can recover it",
                    webhook.webhook_id,
                    webhook.disabled_reason,
                )


def _anonymous(step: Step) -> ClientContact:
    """A stand-in for the log channel while the contact has not arrived: ids only."""
    return ClientContact(
        client_id=step.client_id,
        site_id=step.site_id,
        full_name=step.client_id,
        email=None,
        phone=None,
        locale=step.locale,
    )


async def _settle_step(ctx: NotifierContext, step_id: str, event_id: str) -> None:
    """A step ends once none of its channels is still trying (`Step.settle`).

    Its deliveries are read by id (event id and channel), live or in history."""
    found = [
        await ctx.store.delivery_store.get(f"{event_id}:{channel.name}") for channel in ctx.channels
    ]
    outcomes = {d.status for d in found if d is not None}
    async with ctx.uow.change(ctx.store.step_store, step_id) as step:
        if step is not None:
            step.settle(outcomes)


async def on_contact_change(
    ctx: NotifierContext, client_id: str, contact: ClientContact | None
) -> None:
    """A tombstone erases the client: no further step, message or webhook delivery about them."""
    if contact is not None:
        await ctx.store.erased.delete_one({"_id": client_id})
        return
    await ctx.store.mark_erased(client_id)
    pending = {"client_id": client_id, "status": DeliveryStatus.PENDING.value}
    for delivery_id in await ctx.store.ids(ctx.store.deliveries, pending):
        async with ctx.uow.change(ctx.store.delivery_store, delivery_id) as delivery:
            if delivery is not None:
                delivery.cancel()
    scheduled = {"client_id": client_id, "status": StepStatus.SCHEDULED.value}
    for step_id in await ctx.store.ids(ctx.store.steps, scheduled):
        async with ctx.uow.change(ctx.store.step_store, step_id) as step:
            if step is not None:
                step.cancel()


async def subscribe_webhook(
    ctx: NotifierContext,
    *,
    url: str,
    events: list[str],
    sites: list[str],
    owner: str,
    secret: str | None,
) -> tuple[Webhook, str]:
    """A new subscription and its secret in the clear (shown to its owner once)."""
    secret = secret or new_secret()
    now = ctx.clock()
    webhook = Webhook(
        webhook_id=str(uuid.uuid4()),
        url=url,
        events=sorted(set(events)),
        secrets=[SigningSecret(sealed=ctx.secrets.seal(secret), created_at=now)],
        owner=owner,
        sites=sorted(set(sites)),
        created_at=now,
    )
    await ctx.uow.insert_new(ctx.store.webhook_store, [webhook])
    ctx.store.forget_webhooks()
    return webhook, secret


async def rotate_secret(
    ctx: NotifierContext, webhook_id: str, owner: str, secret: str | None
) -> tuple[Webhook, str] | None:
    """Sign with a new secret from now on (the old one signs too for a day); None when the
    caller owns no such subscription."""
    secret = secret or new_secret()
    async with ctx.uow.change(ctx.store.webhook_store, webhook_id) as webhook:
        if webhook is None or not webhook.owned_by(owner) or not webhook.active:
            return None
        webhook.rotate(ctx.secrets.seal(secret), ctx.clock())
    return webhook, secret


async def recover_webhook(
    ctx: NotifierContext, webhook_id: str, owner: str, since: datetime
) -> int | None:
    """Enable the subscription again and queue every delivery of it that failed since
    `since`, on a fresh retry schedule; how many, or None when the caller owns no such
    subscription."""
    async with ctx.uow.change(ctx.store.webhook_store, webhook_id) as webhook:
        if webhook is None or not webhook.owned_by(owner) or not webhook.active:
            return None
        webhook.recover()
    ctx.store.forget_webhooks()
    failed = {
        "webhook_id": webhook_id,
        "status": DeliveryStatus.FAILED.value,
        "created_at": {"$gte": since},
    }
    store = ctx.store.delivery_store
    assert store.history is not None
    found = await ctx.store.ids(store.collection, failed) + await ctx.store.ids(
        store.history, failed
    )
    now = ctx.clock()
    recovered = 0
    for delivery_id in dict.fromkeys(found):
        if await ctx.uow.reopen(store, delivery_id, lambda d: d.reopen(now)):
            recovered += 1
    return recovered
