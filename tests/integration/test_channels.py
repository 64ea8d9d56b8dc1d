"""Delivery channels against real local servers: an HTTP receiver and an SMTP server on 127.0.0.1.

No Kafka or MongoDB here: each test starts what it talks to on a free loopback port.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest
import uvicorn
from aiosmtpd.controller import Controller
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from services.notifier.adapters.channels import (
    DeliveryError,
    EmailChannel,
    LogChannel,
    LoggingSmsProvider,
    Message,
    SmsChannel,
)
from services.notifier.adapters.webhooks import WebhookSender
from shared.events import ClientContact
from shared.vocabulary import Locale

SECRET = "whsec_" + base64.b64encode(b"integration-test-secret-32-bytes").decode()
BODY = b'{"specversion":"1.0","id":"0f8c","type":"clinic.aftercare_due","data":{"x":"\xc3\xa9"}}'
EMAIL = "camille.martin@example.com"
PHONE = "+33612345678"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Receiver:
    base: str
    received: list[Received] = field(default_factory=list)

    def at(self, path: str) -> list[Received]:
        return [item for item in self.received if item.path == path]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    state = Receiver(f"http://127.0.0.1:{port}")

    async def record(request: Request) -> Response:
        state.received.append(
            Received(request.url.path, await request.body(), dict(request.headers))
        )
        status = int(request.query_params.get("status", "200"))
        return Response(status_code=status)

    async def redirect(request: Request) -> Response:
        state.received.append(Received(request.url.path, await request.body(), {}))
        return RedirectResponse(f"{state.base}/target", status_code=302)

    app = Starlette(
        routes=[
            Route("/hook", record, methods=["POST"]),
            Route("/target", record, methods=["GET", "POST"]),
            Route("/redirect", redirect, methods=["POST"]),
        ]
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.025)
    assert server.started
    yield state
    server.should_exit = True
    await task


@pytest.fixture
async def sender() -> AsyncIterator[WebhookSender]:
    sender = WebhookSender(allow_private=True, timeout=5.0)
    yield sender
    await sender.aclose()


async def test_webhook_post_arrives_signed_with_the_exact_body(
    receiver: Receiver, sender: WebhookSender
) -> None:
    status = await sender.post(
        f"{receiver.base}/hook",
        [SECRET],
        BODY,
        event_id="0f8c",
        event_type="clinic.aftercare_due",
    )
    assert status == 200
    (got,) = receiver.at("/hook")
    assert got.body == BODY
    assert got.headers["content-type"] == "application/cloudevents+json"
    assert got.headers["webhook-id"] == "0f8c"
    assert got.headers["x-clinicflow-event-type"] == "clinic.aftercare_due"
    assert got.headers["user-agent"] == "clinicflow-notifier"
    StandardWebhook(SECRET).verify(got.body, got.headers)
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(other).verify(got.body, got.headers)


async def test_every_webhook_error_is_retried(receiver: Receiver, sender: WebhookSender) -> None:
    """A receiver under maintenance may answer anything; the retries outlast it."""
    for status in (500, 503, 429, 408, 404, 401):
        with pytest.raises(DeliveryError) as failed:
            await sender.post(
                f"{receiver.base}/hook?status={status}",
                [SECRET],
                BODY,
                event_id="e",
                event_type="t",
            )
        assert not failed.value.permanent, status
    assert len(receiver.at("/hook")) == 6


async def test_webhook_redirect_is_not_followed(receiver: Receiver, sender: WebhookSender) -> None:
    with pytest.raises(DeliveryError, match="redirect") as failed:
        await sender.post(f"{receiver.base}/redirect", [SECRET], BODY, event_id="e", event_type="t")
    assert not failed.value.permanent
    assert len(receiver.at("/redirect")) == 1
    await asyncio.sleep(0.2)
    assert receiver.at("/target") == []


async def test_webhook_connection_refused_is_transient(sender: WebhookSender) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there any more
    with pytest.raises(DeliveryError) as failed:
        await sender.post(url, [SECRET], BODY, event_id="e", event_type="t")
    assert not failed.value.permanent


async def test_webhook_to_loopback_is_refused_when_private_targets_are_not_allowed(
    receiver: Receiver,
) -> None:
    strict = WebhookSender(allow_private=False, timeout=5.0)
    try:
        for url in (f"{receiver.base}/hook", f"{receiver.base.replace('http', 'https')}/hook"):
            with pytest.raises(DeliveryError) as refused:
                await strict.post(url, [SECRET], BODY, event_id="e", event_type="t")
            assert "unsafe webhook URL" in str(refused.value)
    finally:
        await strict.aclose()
    await asyncio.sleep(0.2)
    assert receiver.received == []


def contact(**changes: Any) -> ClientContact:
    fields: dict[str, Any] = {
        "client_id": "c-42",
        "site_id": "paris-01",
        "full_name": "Camille Martin",
        "email": EMAIL,
        "phone": PHONE,
        "locale": "fr",
    }
    return ClientContact.model_validate(fields | changes)


def message(locale: Locale = Locale.FR, **changes: Any) -> Message:
    fields: dict[str, Any] = {
        "aftercare_id": "9b2e6c1a-0000-4000-8000-000000000001",
        "client_id": "c-42",
        "step": "day_1",
        "locale": locale,
        "title": "Jour 1 : soins de la peau",
        "instructions": [
            "Gardez la zone propre.",
            "Appliquez une crème hydratante une à deux fois par jour.",
        ],
        "due_at": datetime(2025, 3, 4, 9, 0, tzinfo=UTC),
    }
    return Message(**(fields | changes))


class Collector:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[Any] = []

    async def handle_RCPT(  # aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address.startswith("unknown@"):
            return "550 5.1.1 no such user"
        if address.startswith("busy@"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        self.envelopes.append(envelope)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted"


@pytest.fixture
def smtp() -> Iterator[tuple[Collector, int]]:
    collector = Collector()
    port = free_port()
    controller = Controller(collector, hostname="127.0.0.1", port=port)
    controller.start()
    yield collector, port
    controller.stop()


async def test_email_is_delivered_in_the_clients_language(smtp: tuple[Collector, int]) -> None:
    collector, port = smtp
    channel = EmailChannel("127.0.0.1", port, "soins@clinic.example", timeout=5.0)
    assert channel.name == "email"
    assert channel.accepts(contact())
    await channel.send(message(), contact())

    (mail,) = collector.messages
    assert mail["Subject"] == "Jour 1 : soins de la peau"
    assert mail["To"] == EMAIL
    assert mail["From"] == "soins@clinic.example"
    assert collector.envelopes[0].rcpt_tos == [EMAIL]
    assert mail.get_content_type() == "text/plain"
    body = mail.get_content()
    assert "Bonjour Camille Martin," in body
    assert "Hello" not in body
    assert "- Gardez la zone propre." in body
    assert "- Appliquez une crème hydratante une à deux fois par jour." in body


async def test_email_greets_in_english_for_locale_en(smtp: tuple[Collector, int]) -> None:
    collector, port = smtp
    channel = EmailChannel("127.0.0.1", port, "care@clinic.example", timeout=5.0)
    english = message(Locale.EN, title="Day 1: skin care", instructions=["Keep the area clean."])
    await channel.send(english, contact(locale="en"))
    (mail,) = collector.messages
    assert mail["Subject"] == "Day 1: skin care"
    body = mail.get_content()
    assert "Hello Camille Martin," in body
    assert "Bonjour" not in body
    assert "- Keep the area clean." in body


async def test_email_needs_an_address(smtp: tuple[Collector, int]) -> None:
    collector, port = smtp
    channel = EmailChannel("127.0.0.1", port, "soins@clinic.example", timeout=5.0)
    no_email = contact(email=None)
    assert not channel.accepts(no_email)
    with pytest.raises(DeliveryError) as failed:
        await channel.send(message(), no_email)
    assert failed.value.permanent
    assert collector.messages == []


async def test_email_refused_recipient_is_permanent_and_busy_is_transient(
    smtp: tuple[Collector, int],
) -> None:
    collector, port = smtp
    channel = EmailChannel("127.0.0.1", port, "soins@clinic.example", timeout=5.0)
    with pytest.raises(DeliveryError) as refused:
        await channel.send(message(), contact(email="unknown@example.com"))
    assert refused.value.permanent
    with pytest.raises(DeliveryError) as busy:
        await channel.send(message(), contact(email="busy@example.com"))
    assert not busy.value.permanent
    assert collector.messages == []


async def test_email_server_down_is_transient() -> None:
    channel = EmailChannel("127.0.0.1", free_port(), "soins@clinic.example", timeout=5.0)
    with pytest.raises(DeliveryError) as failed:
        await channel.send(message(), contact())
    assert not failed.value.permanent


class FakeSms:
    def __init__(self, error: Exception | None = None) -> None:
        self.sent: list[tuple[str, str]] = []
        self.error = error

    async def send_sms(self, to: str, text: str) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append((to, text))


async def test_sms_sends_title_and_instructions() -> None:
    provider = FakeSms()
    channel = SmsChannel(provider)
    assert channel.name == "sms"
    assert channel.accepts(contact())
    assert not channel.accepts(contact(phone=None))
    await channel.send(message(), contact())
    ((to, text),) = provider.sent
    assert to == PHONE
    assert text.startswith("Jour 1 : soins de la peau")
    assert "Gardez la zone propre." in text
    assert "Appliquez une crème hydratante une à deux fois par jour." in text


async def test_sms_is_truncated_cleanly() -> None:
    provider = FakeSms()
    channel = SmsChannel(provider, max_chars=60)
    long = message(
        instructions=["Gardez la zone propre et sèche toute la journée, sans maquillage."]
    )
    await channel.send(long, contact())
    ((_, text),) = provider.sent
    assert len(text) <= 60
    assert text.startswith("Jour 1 : soins de la peau")
    assert text.endswith("...")
    full = "Jour 1 : soins de la peau\n- " + long.instructions[0]
    head = text.removesuffix("...")
    assert full.startswith(head)
    assert full[len(head)] in " \n", "a word was cut"


async def test_sms_without_phone_or_failing_provider() -> None:
    with pytest.raises(DeliveryError) as no_phone:
        await SmsChannel(FakeSms()).send(message(), contact(phone=None))
    assert no_phone.value.permanent
    with pytest.raises(DeliveryError) as down:
        await SmsChannel(FakeSms(ConnectionError("provider down"))).send(message(), contact())
    assert not down.value.permanent


async def test_channels_refuse_another_clients_contact() -> None:
    provider = FakeSms()
    with pytest.raises(DeliveryError) as mismatch:
        await SmsChannel(provider).send(message(), contact(client_id="c-other"))
    assert mismatch.value.permanent
    assert provider.sent == []


async def test_log_channel_logs_the_step_without_contact_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = LogChannel()
    assert channel.name == "log"
    assert channel.accepts(contact(email=None, phone=None))
    with caplog.at_level(logging.INFO, logger="clinicflow.aftercare"):
        await channel.send(message(), contact())
    (record,) = [r for r in caplog.records if r.name == "clinicflow.aftercare"]
    assert record.levelno == logging.INFO
    line = record.getMessage()
    assert "c-42" in line
    assert "day_1" in line
    assert "Jour 1 : soins de la peau" in line
    assert "Gardez la zone propre." in line
    assert "une à deux fois par jour" in line
    assert EMAIL not in caplog.text
    assert PHONE not in caplog.text
    assert "Camille" not in caplog.text


async def test_logging_sms_provider_names_the_client_not_the_number(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = SmsChannel(LoggingSmsProvider())
    with caplog.at_level(logging.INFO, logger="clinicflow.aftercare"):
        await channel.send(message(), contact())
    assert "sms to c-42" in caplog.text
    assert PHONE not in caplog.text
    assert PHONE.removeprefix("+") not in caplog.text
