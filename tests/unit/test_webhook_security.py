"""Webhook signatures and URL safety (SSRF), without any server."""

from __future__ import annotations

import hashlib
import hmac
import socket
from typing import Any

import httpx
import pytest

from services.notifier.adapters.channels import DeliveryError
from services.notifier.adapters.webhooks import (
    SIGNATURE_HEADER,
    UnsafeWebhookUrl,
    WebhookSender,
    check_webhook_url,
    sign,
    verify,
)

SECRET = "whsec_test_0123456789"
BODY = b'{"specversion":"1.0","id":"e1","type":"clinic.aftercare_due"}'
NOW = 1_750_000_000


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    header = sign(SECRET, BODY, NOW)
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={NOW},v1={expected}"


def test_sign_verify_round_trip() -> None:
    header = sign(SECRET, BODY, NOW)
    assert verify(SECRET, BODY, header, now=NOW)
    assert verify(SECRET, BODY, header, now=NOW + 299)
    assert verify(SECRET, BODY, header, now=NOW - 299)


def test_tampered_body_fails() -> None:
    header = sign(SECRET, BODY, NOW)
    assert not verify(SECRET, BODY.replace(b"e1", b"e2"), header, now=NOW)
    assert not verify(SECRET, BODY + b" ", header, now=NOW)


def test_wrong_secret_fails() -> None:
    header = sign(SECRET, BODY, NOW)
    assert not verify("another-secret", BODY, header, now=NOW)


def test_stale_or_future_timestamp_fails() -> None:
    header = sign(SECRET, BODY, NOW)
    assert not verify(SECRET, BODY, header, now=NOW + 301)
    assert not verify(SECRET, BODY, header, now=NOW - 301)
    assert not verify(SECRET, BODY, header, now=NOW + 60, tolerance=30)


def test_moved_timestamp_fails() -> None:
    mac = sign(SECRET, BODY, NOW).split(",v1=")[1]
    assert not verify(SECRET, BODY, f"t={NOW + 10},v1={mac}", now=NOW + 10)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"t={NOW}",
        "v1=abc",
        "t=abc,v1=00",
        f"t={NOW},t={NOW},v1=00",
        f"t=-{NOW},v1=0",
    ],
)
def test_malformed_headers_fail(header: str) -> None:
    assert not verify(SECRET, BODY, header, now=NOW)


def test_one_matching_signature_among_several_verifies() -> None:
    good = sign(SECRET, BODY, NOW).split(",v1=")[1]
    assert verify(SECRET, BODY, f"t={NOW},v1={'0' * 64},v1={good}", now=NOW)


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
    assert await sender.post(url, SECRET, BODY, event_id="e1", event_type="t", now=NOW) == 204
    with pytest.raises(DeliveryError, match="link-local") as refused:
        await sender.post(url, SECRET, BODY, event_id="e2", event_type="t", now=NOW)
    assert refused.value.permanent
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
        "https://Hooks.Example.com/x?a=1", SECRET, BODY, event_id="e1", event_type="t", now=NOW
    )
    (request,) = seen
    assert request.url.host == "93.184.216.34"
    assert request.url.port in (None, 443)
    assert request.url.raw_path == b"/x?a=1"
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert request.content == BODY
    assert verify(SECRET, BODY, request.headers[SIGNATURE_HEADER], now=NOW)
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
            await sender.post(url, SECRET, BODY, event_id="e1", event_type="t")
        assert refused.value.permanent
    with pytest.raises(DeliveryError) as bad_header:
        await sender.post(
            "https://93.184.216.34/", SECRET, BODY, event_id="e1\r\nX: y", event_type="t"
        )
    assert bad_header.value.permanent
    assert seen == []
    await client.aclose()
