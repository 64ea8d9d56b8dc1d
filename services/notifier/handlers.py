"""What the notifier does: materialise timelines, release due steps, deliver them, and fan
events out to integrators' webhooks."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from prometheus_client import Counter

from services.notifier.adapters.channels import Channel, DeliveryError, Message
from services.notifier.adapters.store import Decide, Document, NotifierStore
from services.notifier.adapters.webhooks import WebhookSender
from services.notifier.domain.timeline import PlannedStep, after_session, before_session
from shared.envelope import Event, Record, build
from shared.events import (
    AftercareDue,
    ClientContact,
    SessionCancelled,
    SessionCompleted,
    SessionScheduled,
    SiteUpdated,
)
from shared.ids import Ids
from shared.outbox import lease_name, with_outbox
from shared.vocabulary import AftercareStep, Locale

log = logging.getLogger(__name__)
STEP_STATUSES = {"scheduled", "due", "delivered", "failed", "cancelled"}
STEPS_RELEASED = Counter("clinicflow_aftercare_released_total", "Aftercare steps that fell due.")
DELIVERIES_DONE = Counter(
    "clinicflow_deliveries_total",
    "Delivery attempts, by channel and outcome.",
    ["channel", "outcome"],
)


class Contacts(Protocol):
    def get(self, key: str) -> ClientContact | None: ...


class Sites(Protocol):
    def get(self, key: str) -> SiteUpdated | None: ...


@dataclass
class NotifierContext:
    store: NotifierStore
    contacts: Contacts
    sites: Sites
    channels: Sequence[Channel]
    webhooks: WebhookSender
    topic_prefix: str
    notify_relay: Callable[[], None]
    ids: Ids
    max_attempts: int = 8
    backoff: timedelta = timedelta(seconds=2)
    batch: int = 200
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def locale_of(self, client_id: str) -> Locale:
        contact = self.contacts.get(client_id)
        return contact.locale if contact else Locale.EN


Handler = Callable[[NotifierContext, Event], Awaitable[None]]


def aftercare_id(ids: Ids, session_id: uuid.UUID | str, step: AftercareStep) -> str:
    return str(ids.uuid("aftercare", session_id, step.value))


def _step_document(
    planned: PlannedStep,
    *,
    ids: Ids,
    event: Event,
    session_id: uuid.UUID,
    plan_id: uuid.UUID,
    locale: Locale,
) -> Document:
    now = datetime.now(UTC)
    document = {
        "_id": aftercare_id(ids, session_id, planned.step),
        "client_id": event.data.client_id,  # type: ignore[attr-defined]
        "site_id": event.envelope.siteid,
        "plan_id": str(plan_id),
        "session_id": str(session_id),
        "step": planned.step.value,
        "due_at": planned.due_at,
        "status": "scheduled",
        "locale": locale.value,
        "title": planned.title,
        "instructions": planned.instructions,
        "correlation_id": event.correlation_id,
        "cause_id": event.id,
        "created_at": now,
        "updated_at": now,
    }
    return with_outbox(document, [])


def set_status(to: str, *, from_: set[str]) -> Decide:
    """A change that moves a step or delivery to `to`, only from one of the `from_` states."""

    def decide(current: Document) -> tuple[Document, list[Record]] | None:
        if current["status"] not in from_:
            return None
        return {"$set": {"status": to}}, []

    return decide


async def on_session_completed(ctx: NotifierContext, event: Event) -> None:
    """Materialise the session's aftercare timeline: every step stored with its due time."""
    completed = event.data
    assert isinstance(completed, SessionCompleted)
    if await ctx.store.is_erased(completed.client_id):
        return
    locale = ctx.locale_of(completed.client_id)
    documents = [
        _step_document(
            planned,
            ids=ctx.ids,
            event=event,
            session_id=completed.session_id,
            plan_id=completed.plan_id,
            locale=locale,
        )
        for planned in after_session(completed, locale)
    ]
    await ctx.store.insert_new(ctx.store.steps, documents)
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
    timezone = site.timezone if site else "UTC"
    planned = before_session(scheduled.starts_at, timezone, locale, now=ctx.clock())
    document = _step_document(
        planned,
        ids=ctx.ids,
        event=event,
        session_id=scheduled.session_id,
        plan_id=scheduled.plan_id,
        locale=locale,
    )
    if await ctx.store.insert_new(ctx.store.steps, [document]):
        return

    def move(current: Document) -> tuple[Document, list[Record]] | None:
        if current["status"] != "scheduled":
            return None
        update = {"due_at": planned.due_at, "title": planned.title}
        return {"$set": {**update, "instructions": planned.instructions}}, []

    await ctx.store.change(ctx.store.steps, document["_id"], move, wait=True)


async def on_session_cancelled(ctx: NotifierContext, event: Event) -> None:
    cancelled = event.data
    assert isinstance(cancelled, SessionCancelled)
    await fan_out(ctx, event)

    step_id = aftercare_id(ctx.ids, cancelled.session_id, AftercareStep.NEXT_SESSION)
    await ctx.store.change(
        ctx.store.steps, step_id, set_status("cancelled", from_={"scheduled"}), wait=True
    )


async def release_due_steps(ctx: NotifierContext) -> int:
    """The durable timer: publish `aftercare_due` for every step whose time has come.

    Reads only steps due now (index on status and due time). Each step is released under its
    lease and re-read there, so two replicas never both release one, and a replica that dies
    holding a lease leaves the step to the next one once the lease expires.
    """
    now = ctx.clock()
    due = ctx.store.steps.find({"status": "scheduled", "due_at": {"$lte": now}}, {"_id": 1}).sort(
        "due_at", 1
    )
    released = 0
    for document in await due.limit(ctx.batch).to_list():

        def release(step: Document) -> tuple[Document, list[Record]] | None:
            if step["status"] != "scheduled" or step["due_at"] > now:
                return None
            record = build(
                AftercareDue(
                    aftercare_id=step["_id"],
                    client_id=step["client_id"],
                    site_id=step["site_id"],
                    session_id=step["session_id"],
                    step=step["step"],
                    due_at=step["due_at"],
                    locale=step["locale"],
                    title=step["title"],
                    instructions=step["instructions"],
                ),
                source="notifier",
                prefix=ctx.topic_prefix,
                correlation_id=step["correlation_id"],
                causation_id=step["cause_id"],
            )
            return {"$set": {"status": "due", "event_id": record.event_id, "released_at": now}}, [
                record
            ]

        changed = await ctx.store.change(ctx.store.steps, document["_id"], release)
        if changed is not None and changed["status"] == "scheduled":
            released += 1
            STEPS_RELEASED.inc()
    if released:
        ctx.notify_relay()
    return released


async def on_aftercare_due(ctx: NotifierContext, event: Event) -> None:
    """Queue the step's delivery to the client (each channel) and to subscribed webhooks."""
    due = event.data
    assert isinstance(due, AftercareDue)
    await fan_out(ctx, event)
    if await ctx.store.is_erased(due.client_id):
        return
    contact = ctx.contacts.get(due.client_id)
    now = ctx.clock()
    documents = [
        {
            "_id": f"{event.id}:{channel.name}",
            "kind": "client",
            "channel": channel.name,
            "event_id": event.id,
            "aftercare_id": str(due.aftercare_id),
            "client_id": due.client_id,
            "status": "pending",
            "attempts": [],
            "next_attempt_at": now,
            "created_at": now,
        }
        for channel in ctx.channels
        if channel.name == "log" or (contact is not None and channel.accepts(contact))
    ]
    await ctx.store.insert_new(ctx.store.deliveries, documents)


async def fan_out(ctx: NotifierContext, event: Event) -> None:
    """Queue the event for every webhook subscribed to its type and covering its site.

    Nothing about an erased client goes out any more, to integrators either (SPEC section 6).
    """
    client_id = getattr(event.data, "client_id", None)
    if client_id is not None and await ctx.store.is_erased(client_id):
        return
    now = ctx.clock()
    subscriptions = ctx.store.webhooks.find({"events": event.envelope.type, "active": True})
    documents = [
        {
            "_id": f"{event.id}:{subscription['_id']}",
            "kind": "webhook",
            "channel": "webhook",
            "webhook_id": subscription["_id"],
            "event_id": event.id,
            "event_type": event.envelope.type,
            "aftercare_id": str(getattr(event.data, "aftercare_id", "")) or None,
            "client_id": getattr(event.data, "client_id", None),
            "body": event.raw.decode(),
            "status": "pending",
            "attempts": [],
            "next_attempt_at": now,
            "created_at": now,
        }
        async for subscription in subscriptions
        if _covers(subscription, event.envelope.siteid)
    ]
    await ctx.store.insert_new(ctx.store.deliveries, documents)


def _covers(subscription: Document, site_id: str) -> bool:
    """An integrator's webhook receives the events of its own sites only."""
    sites = subscription.get("sites") or []
    return "*" in sites or site_id in sites


async def deliver_pending(ctx: NotifierContext) -> int:
    """Attempt every delivery whose time has come; record each attempt; back off on failure."""
    now = ctx.clock()
    pending = ctx.store.deliveries.find(
        {"status": "pending", "next_attempt_at": {"$lte": now}}, {"_id": 1}
    ).sort("next_attempt_at", 1)
    attempted = 0
    for document in await pending.limit(ctx.batch).to_list():
        lease_holder = await ctx.store.locks.try_acquire(
            lease_name(ctx.store.deliveries, document["_id"])
        )
        if lease_holder is None:
            continue
        try:
            delivery = await ctx.store.deliveries.find_one({"_id": document["_id"]})
            if delivery is None or delivery["status"] != "pending":
                continue
            await _attempt(ctx, delivery)
            attempted += 1
        finally:
            await ctx.store.locks.release(lease_holder)
    return attempted


async def _attempt(ctx: NotifierContext, delivery: Document) -> None:
    started = ctx.clock()
    outcome: dict[str, Any] = {"at": started}
    try:
        await _send(ctx, delivery)
        status, outcome["ok"] = "delivered", True
    except _Cancelled:
        status, outcome["ok"], outcome["error"] = "cancelled", False, "client erased"
    except DeliveryError as exc:
        outcome["ok"], outcome["error"] = False, str(exc)[:500]
        tries = len(delivery["attempts"]) + 1
        status = "failed" if exc.permanent or tries >= ctx.max_attempts else "pending"
    update: Document = {
        "$push": {"attempts": outcome},
        "$set": {
            "status": status,
            "next_attempt_at": started + ctx.backoff * 2 ** len(delivery["attempts"]),
        },
    }
    await ctx.store.deliveries.update_one({"_id": delivery["_id"]}, update)
    DELIVERIES_DONE.labels(delivery["channel"], status).inc()
    if delivery["kind"] == "client" and status != "pending":
        await _settle_step(ctx, delivery["aftercare_id"])


class _Cancelled(Exception):
    """The client was erased: nothing more is sent to them."""


async def _send(ctx: NotifierContext, delivery: Document) -> None:
    client_id = delivery.get("client_id")
    if client_id is not None and await ctx.store.is_erased(client_id):
        raise _Cancelled
    if delivery["kind"] == "webhook":
        subscription = await ctx.store.webhooks.find_one({"_id": delivery["webhook_id"]})
        if subscription is None or not subscription.get("active", False):
            raise DeliveryError("the webhook was removed", permanent=True)
        await ctx.webhooks.post(
            subscription["url"],
            subscription["secret"],
            delivery["body"].encode(),
            event_id=delivery["event_id"],
            event_type=delivery["event_type"],
        )
        return
    step = await ctx.store.steps.find_one({"_id": delivery["aftercare_id"]})
    if step is None:
        raise DeliveryError("the aftercare step is gone", permanent=True)
    channel = next(c for c in ctx.channels if c.name == delivery["channel"])
    contact = ctx.contacts.get(delivery["client_id"])
    if contact is None and channel.name != "log":
        raise DeliveryError("no contact details for this client yet", permanent=False)
    message = Message(
        aftercare_id=step["_id"],
        client_id=step["client_id"],
        step=step["step"],
        locale=Locale(step["locale"]),
        title=step["title"],
        instructions=list(step["instructions"]),
        due_at=step["due_at"],
    )
    await channel.send(message, contact or _anonymous(step))


def _anonymous(step: Document) -> ClientContact:
    """A stand-in for the log channel while the contact has not arrived: ids only."""
    return ClientContact(
        client_id=step["client_id"],
        site_id=step["site_id"],
        full_name=step["client_id"],
        email=None,
        phone=None,
        locale=Locale(step["locale"]),
    )


async def _settle_step(ctx: NotifierContext, step_id: str) -> None:
    """A step is delivered once any client channel delivered it, failed once all failed."""
    outcomes = {
        d["status"]
        async for d in ctx.store.deliveries.find({"aftercare_id": step_id, "kind": "client"})
    }
    if "delivered" in outcomes:
        status = "delivered"
    elif outcomes and outcomes <= {"failed", "cancelled"}:
        status = "cancelled" if outcomes == {"cancelled"} else "failed"
    else:
        return

    settle = set_status(status, from_=STEP_STATUSES - {status})
    await ctx.store.change(ctx.store.steps, step_id, settle, wait=True)


async def on_contact_change(
    ctx: NotifierContext, client_id: str, contact: ClientContact | None
) -> None:
    """A tombstone erases the client: no further step, message or webhook delivery about them."""
    if contact is not None:
        await ctx.store.erased.delete_one({"_id": client_id})
        return
    await ctx.store.mark_erased(client_id)
    cancel = set_status("cancelled", from_={"scheduled", "pending"})
    pending = ctx.store.deliveries.find({"client_id": client_id, "status": "pending"}, {"_id": 1})
    for delivery in await pending.to_list():
        await ctx.store.change(ctx.store.deliveries, delivery["_id"], cancel, wait=True)
    scheduled = ctx.store.steps.find({"client_id": client_id, "status": "scheduled"}, {"_id": 1})
    for step in await scheduled.to_list():
        await ctx.store.change(ctx.store.steps, step["_id"], cancel, wait=True)
