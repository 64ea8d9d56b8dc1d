"""Webhook signatures and URL safety (SSRF), without any server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.notifier.adapters.channels import DeliveryError
from services.notifier.adapters.webhooks import (
    Aborted,
    UnsafeWebhookUrl,
    WebhookSender,
    check_webhook_url,
    signature,
)

SECRET = "whsec_" + base64.b64encode(b"a test secret of 32 bytes length").decode()
NEXT_SECRET = "whsec_" + base64.b64encode(b"the secret rotated in, 32 bytes!").decode()
BODY = b'{"specversion":"1.0","id":"e1","type":"clinic.aftercare_due"}'


def now() -> datetime:
    """Taken per test: verifiers refuse timestamps over five minutes old, and the suite runs
    longer than that."""
    return datetime.now(UTC).replace(microsecond=0)


def headers_for(
    secrets: list[str], body: bytes = BODY, at: datetime | None = None
) -> dict[str, str]:
    at = at or now()
    return {
        "webhook-id": "e1",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature(secrets, "e1", at, body),
    }


def test_the_official_library_verifies_a_signature() -> None:
    assert StandardWebhook(SECRET).verify(BODY, headers_for([SECRET]))["id"] == "e1"


def test_the_signature_is_hmac_sha256_of_id_timestamp_and_body() -> None:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    at = now()
    signed = f"e1.{int(at.timestamp())}.".encode() + BODY
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers_for([SECRET], at=at)["webhook-signature"] == f"v1,{expected}"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h: h | {"webhook-id": "e2"},
        lambda h: h | {"webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)},
        lambda h: {k: v for k, v in h.items() if k != "webhook-signature"},
    ],
)
def test_a_changed_id_timestamp_or_missing_signature_fails(
    tamper: Callable[[dict[str, str]], dict[str, str]],
) -> None:
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(SECRET).verify(BODY, tamper(headers_for([SECRET])))


def test_a_tampered_body_or_another_secret_fails() -> None:
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(SECRET).verify(BODY + b" ", headers_for([SECRET]))
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(NEXT_SECRET).verify(BODY, headers_for([SECRET]))


def test_a_stale_timestamp_fails() -> None:
    stale = headers_for([SECRET], at=now() - timedelta(minutes=6))
    with pytest.raises(WebhookVerificationError, match="too old"):
        StandardWebhook(SECRET).verify(BODY, stale)


def test_while_a_secret_rotates_either_secret_verifies() -> None:
    both = headers_for([SECRET, NEXT_SECRET])
    assert len(both["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, NEXT_SECRET):
        StandardWebhook(secret).verify(BODY, both)


def test_public_https_literal_is_accepted_and_normalised() -> None:
    assert check_webhook_url("https://93.184.216.34/hook", allow_private=False) == (
        "https://93.184.216.34/hook"
    )
    assert check_webhook_url("HTTPS://93.184.216.34:443/h?x=1#frag", allow_private=False) == (
        "https://93.184.216.34/h?x=1"
    )
    assert check_webhook_url("https://[2606:4700:4700::1111]:8443", allow_private=False) == (
        "https://[2606:4700:4700::1111]:8443/"
    )


def test_plain_http_is_refused_unless_private_targets_are_allowed() -> None:
    with pytest.raises(UnsafeWebhookUrl, match="https"):
        check_webhook_url("http://93.184.216.34/hook", allow_private=False)
    assert check_webhook_url("http://93.184.216.34/hook", allow_private=True).startswith("http:")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://127.8.9.10:8443/hook", "loopback"),
        ("https://localhost/hook", "loopback"),
        ("https://10.0.0.1/hook", "private"),
        ("https://192.168.1.5/hook", "private"),
        ("https://172.16.0.1/hook", "private"),
        ("https://172.31.255.254/hook", "private"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[::1]/hook", "loopback"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://[fd00::1]/hook", "unique-local"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("https://[::]/hook", "unspecified"),
        ("https://224.0.0.1/hook", "multicast"),
        ("https://240.0.0.1/hook", "private|reserved"),
        ("https://100.64.0.1/hook", "non-public"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://[::ffff:169.254.169.254]/hook", "link-local"),
        ("https://2130706433/hook", "loopback"),  # 127.0.0.1 spelled as one number
        ("https://0x7f.1/hook", "loopback"),
    ],
)
def test_internal_addresses_are_refused_unless_allowed(url: str, reason: str) -> None:
    with pytest.raises(UnsafeWebhookUrl, match=reason):
        check_webhook_url(url, allow_private=False)
    assert check_webhook_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pass@93.184.216.34/hook",
        "https://user@93.184.216.34/hook",
        "https://:secret@93.184.216.34/hook",
    ],
)
def test_credentials_in_url_are_refused(url: str) -> None:
    for allow_private in (False, True):
        with pytest.raises(UnsafeWebhookUrl, match="credentials"):
            check_webhook_url(url, allow_private=allow_private)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not-a-url",
        "https://",
        "https:///hook",
        "ftp://93.184.216.34/hook",
        "javascript:alert(1)",
        "https://93.184.216.34:99999/hook",
        "https://93.184.216.34/ho ok",
        "https://93.184.216.34/\r\nX-Injected: 1",
    ],
)
def test_garbage_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeWebhookUrl):
        check_webhook_url(url, allow_private=True)


def test_loopback_is_accepted_when_private_targets_are_allowed() -> None:
    assert check_webhook_url("http://127.0.0.1:8080/x", allow_private=True) == (
        "http://127.0.0.1:8080/x"
    )


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: list[list[str]]) -> list[str]:
    """Make name resolution answer each call with the next address list; returns queried names."""
    asked: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        return [
            (
                socket.AF_INET6 if ":" in ip else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (ip, port),
            )
            for ip in answers[min(len(asked), len(answers)) - 1]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_a_name_that_does_not_resolve_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(UnsafeWebhookUrl, match="does not resolve"):
        check_webhook_url("https://hooks.example.com/x", allow_private=True)


def test_a_name_with_any_internal_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, [["93.184.216.34", "10.1.2.3"]])
    with pytest.raises(UnsafeWebhookUrl, match="private"):
        check_webhook_url("https://hooks.example.com/x", allow_private=False)


async def test_sender_rechecks_dns_before_every_post(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_dns(monkeypatch, [["93.184.216.34"], ["169.254.169.254"]])
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    sender = WebhookSender(allow_private=False, client=client)
    url = "https://hooks.example.com/x"
    assert await sender.post(url, [SECRET], BODY, event_id="e1", event_type="t", now=now()) == 204
    with pytest.raises(DeliveryError, match="link-local") as refused:
        await sender.post(url, [SECRET], BODY, event_id="e2", event_type="t", now=now())
    assert not refused.value.permanent, "DNS may be fixed before the retries run out"
    assert asked == ["hooks.example.com", "hooks.example.com"]
    assert len(seen) == 1
    await client.aclose()


async def test_sender_connects_to_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """The POST goes to the address that passed the check, so a DNS answer changing between
    the check and the connection (rebinding) cannot point it inside; the name stays in Host
    and in TLS SNI."""
    fake_dns(monkeypatch, [["93.184.216.34"]])
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    sender = WebhookSender(allow_private=False, client=client)
    await sender.post(
        "https://Hooks.Example.com/x?a=1", [SECRET], BODY, event_id="e1", event_type="t", now=now()
    )
    (request,) = seen
    assert request.url.host == "93.184.216.34"
    assert request.url.port in (None, 443)
    assert request.url.raw_path == b"/x?a=1"
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert request.content == BODY
    StandardWebhook(SECRET).verify(BODY, dict(request.headers))
    assert request.headers["webhook-id"] == "e1"
    await client.aclose()


async def test_sender_refuses_unsafe_urls_without_any_request() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    sender = WebhookSender(allow_private=False, client=client)
    for url in ("https://169.254.169.254/latest", "http://93.184.216.34/", "https://u:p@1.1.1.1/"):
        with pytest.raises(DeliveryError) as refused:
            await sender.post(url, [SECRET], BODY, event_id="e1", event_type="t")
        assert "unsafe webhook URL" in str(refused.value)
    with pytest.raises(DeliveryError) as bad_header:
        await sender.post(
            "https://93.184.216.34/", [SECRET], BODY, event_id="e1\r\nX: y", event_type="t"
        )
    assert bad_header.value.permanent
    assert seen == []
    await client.aclose()


@pytest.mark.parametrize(
    ("status", "headers", "outcome"),
    [
        (200, {}, "delivered"),
        (503, {}, "retried"),
        (404, {}, "retried"),
        (410, {"webhook-delivery": "abort-message"}, "aborted"),
        (500, {"Webhook-Delivery": "Abort-Message"}, "aborted"),
    ],
)
async def test_only_a_receiver_that_asks_stops_the_retries(
    monkeypatch: pytest.MonkeyPatch, status: int, headers: dict[str, str], outcome: str
) -> None:
    fake_dns(monkeypatch, [["93.184.216.34"]])
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda _: httpx.Response(status, headers=headers))
    )
    sender = WebhookSender(allow_private=False, client=client)
    try:
        await sender.post("https://hooks.example.com/x", [SECRET], BODY, event_id="e1",
                          event_type="t")  # fmt: skip
        seen = "delivered"
    except Aborted:
        seen = "aborted"
    except DeliveryError as exc:
        seen = "given up" if exc.permanent else "retried"
    assert seen == outcome
    await client.aclose()
