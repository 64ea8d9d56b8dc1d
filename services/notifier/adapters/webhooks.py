"""Integrator webhooks: POSTs of CloudEvents signed the Standard Webhooks way, to URLs that
cannot reach inside the network.

Signature (SPEC section 7): headers `webhook-id` (the event id, the same on every retry),
`webhook-timestamp` (unix seconds) and `webhook-signature`, one `v1,<base64 HMAC-SHA256>` of
`"<id>.<timestamp>.<body>"` per signing secret, space-separated while a secret rotates. The
official `standardwebhooks` libraries verify it; the signing here is theirs too.

A receiver that answers with the header `webhook-delivery: abort-message` is not sent that
message again.

URL safety (SSRF): a webhook URL must be `https`, carry no credentials, resolve, and every
address it resolves to must be public, unless the deployment allows private targets (the local
stack and the tests). The check is repeated before every POST, and when private targets are not
allowed the POST goes to the very address that was checked (Host header and TLS SNI keep the
name), so a DNS answer that changes between the check and the connection cannot redirect it.
Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx
from standardwebhooks import Webhook as Signer

from services.notifier.adapters.channels import DeliveryError

USER_AGENT = "clinicflow-notifier"
ABORT_HEADER = "webhook-delivery"
ABORT_VALUE = "abort-message"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def signature(secrets: list[str], event_id: str, timestamp: datetime, body: bytes) -> str:
    """The `webhook-signature` header: one signature per secret, space-separated."""
    return " ".join(Signer(secret).sign(event_id, timestamp, body.decode()) for secret in secrets)


class Aborted(DeliveryError):
    """The receiver asked, with `webhook-delivery: abort-message`, not to get this again."""

    def __init__(self, status: int) -> None:
        super().__init__(
            f"webhook answered {status} and asked not to be sent this message again",
            permanent=True,
        )


class UnsafeWebhookUrl(ValueError):
    """A webhook URL that must not be called; the message names the problem."""


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")


def _refusal(ip: IPAddress) -> str | None:
    """Why a POST must not go to `ip`, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and (reason := _refusal(embedded)) is not None:
            return reason
        if ip in _UNIQUE_LOCAL:
            return "unique-local"
        if ip.is_site_local:
            return "site-local"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("non-public", not ip.is_global),
    )
    return next((reason for reason, hit in checks if hit), None)


def _address(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])


@dataclass(frozen=True)
class _Target:
    url: str  # normalised
    parts: SplitResult
    host: str  # IDNA-encoded host name or IP literal, without brackets
    port: int
    addresses: list[IPAddress]


def _check(url: str, *, allow_private: bool) -> _Target:
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise UnsafeWebhookUrl("webhook URL must be a non-empty string of at most 2048 characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UnsafeWebhookUrl("webhook URL must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeWebhookUrl(f"webhook URL is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if allow_private else ("https",)
    if scheme not in allowed:
        raise UnsafeWebhookUrl("webhook URL must use https")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeWebhookUrl("webhook URL must not contain credentials")
    if not parts.hostname:
        raise UnsafeWebhookUrl("webhook URL has no host")
    try:
        host = parts.hostname.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UnsafeWebhookUrl("webhook URL host is not a valid host name") from None
    if not host:
        raise UnsafeWebhookUrl("webhook URL has no host")
    port = port if port is not None else (443 if scheme == "https" else 80)

    try:
        literal: IPAddress | None = _address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise UnsafeWebhookUrl(f"webhook host {host!r} does not resolve") from None
        addresses = []
        for info in infos:
            ip = _address(str(info[4][0]))
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise UnsafeWebhookUrl(f"webhook host {host!r} does not resolve")
    if not allow_private:
        for ip in addresses:
            if (reason := _refusal(ip)) is not None:
                raise UnsafeWebhookUrl(
                    f"webhook host {host!r} resolves to a {reason} address ({ip}); "
                    "only public addresses are allowed"
                )

    shown = f"[{host}]" if isinstance(literal, ipaddress.IPv6Address) else host
    default_port = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    netloc = shown if default_port else f"{shown}:{port}"
    normalised = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    return _Target(normalised, parts, host, port, addresses)


def check_webhook_url(url: str, *, allow_private: bool) -> str:
    """The normalised URL if a webhook may be POSTed to it, else `UnsafeWebhookUrl`.

    Resolves the host name (blocking): call it through `asyncio.to_thread` from async code.
    """
    return _check(url, allow_private=allow_private).url


_HEADER_VALUE = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,255}")


class WebhookSender:
    """POSTs signed bodies to checked webhook URLs and classifies the outcome."""

    def __init__(
        self, *, allow_private: bool, timeout: float = 10.0, client: httpx.AsyncClient | None = None
    ) -> None:
        self.allow_private = allow_private
        self.timeout = timeout
        self._owns_client = client is None
        # trust_env=False: an ambient HTTP(S)_PROXY would resolve names behind our back.
        self._client = client or httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, trust_env=False
        )

    async def post(
        self,
        url: str,
        secrets: list[str],
        body: bytes,
        *,
        event_id: str,
        event_type: str,
        now: datetime | None = None,
    ) -> int:
        """POST `body` to `url` signed with each of `secrets`; the 2xx status, or
        `DeliveryError` (`Aborted` when the receiver asked to stop this message).

        Everything short of that is worth retrying: a receiver down for maintenance may answer
        404 or fail to resolve for a while, and the retry schedule outlasts a day of that."""
        for name, value in (("event id", event_id), ("event type", event_type)):
            if not _HEADER_VALUE.fullmatch(value):
                raise DeliveryError(f"{name} is not a valid header value", permanent=True)
        try:
            target = await asyncio.to_thread(_check, url, allow_private=self.allow_private)
        except UnsafeWebhookUrl as exc:
            raise DeliveryError(f"unsafe webhook URL: {exc}", permanent=False) from exc

        sent_at = (now or datetime.now(UTC)).replace(microsecond=0)
        headers = {
            "Content-Type": "application/cloudevents+json",
            "webhook-id": event_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature(secrets, event_id, sent_at, body),
            "X-Clinicflow-Event-Type": event_type,
            "User-Agent": USER_AGENT,
        }
        request_url = target.url
        extensions: dict[str, str] = {}
        if not self.allow_private:
            # Connect to the address just checked, not to whatever the name resolves to next.
            ip = target.addresses[0]
            shown = f"[{ip}]" if ip.version == 6 else str(ip)
            pinned = target.parts._replace(netloc=f"{shown}:{target.port}", fragment="")
            request_url = urlunsplit(pinned._replace(path=pinned.path or "/"))
            headers["Host"] = urlsplit(target.url).netloc
            headers["Connection"] = "close"  # a pooled connection must not serve another name
            if pinned.scheme == "https":
                extensions["sni_hostname"] = target.host

        try:
            request = self._client.build_request(
                "POST", request_url, content=body, headers=headers, extensions=extensions
            )
            async with asyncio.timeout(self.timeout):
                response = await self._client.send(request, follow_redirects=False, stream=True)
                status = response.status_code
                abort = response.headers.get(ABORT_HEADER, "").strip().lower() == ABORT_VALUE
                await response.aclose()  # the body is never read: a reply cannot flood us
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise DeliveryError("webhook timed out", permanent=False) from exc
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise DeliveryError(f"webhook {type(exc).__name__}", permanent=False) from exc

        if 200 <= status < 300:
            return status
        if abort:
            raise Aborted(status)
        if 300 <= status < 400:
            raise DeliveryError(
                f"webhook answered {status}: redirects are not followed", permanent=False
            )
        raise DeliveryError(f"webhook answered {status}", permanent=False)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
