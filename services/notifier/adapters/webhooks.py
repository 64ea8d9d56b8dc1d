"""Integrator webhooks: signed POSTs of CloudEvents to URLs that cannot reach inside the network.

Signature: header `X-Clinicflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`, where the HMAC
of the subscription's secret covers `f"{t}."` followed by the exact body bytes. A receiver
recomputes it, compares in constant time and refuses stale timestamps (replays).

URL safety (SSRF): a webhook URL must be `https`, carry no credentials, resolve, and every
address it resolves to must be public, unless the deployment allows private targets (the local
stack and the tests). The check is repeated before every POST, and when private targets are not
allowed the POST goes to the very address that was checked (Host header and TLS SNI keep the
name), so a DNS answer that changes between the check and the connection cannot redirect it.
Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx

from services.notifier.adapters.channels import DeliveryError

SIGNATURE_HEADER = "X-Clinicflow-Signature"
USER_AGENT = "clinicflow-notifier"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _mac(secret: str, body: bytes, timestamp: int) -> str:
    payload = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The value of `SIGNATURE_HEADER` for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, body, timestamp)}"


def verify(secret: str, body: bytes, header: str, *, now: int, tolerance: int = 300) -> bool:
    """Whether `header` signs `body` with `secret` at a time within `tolerance` s of `now`."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if timestamp is not None or not re.fullmatch(r"\d{1,12}", value):
                return False
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    expected = _mac(secret, body, timestamp).encode()
    matched = False
    for candidate in candidates:  # several v1 entries when a secret is being rotated
        matched |= hmac.compare_digest(expected, candidate.encode())
    return matched


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
        secret: str,
        body: bytes,
        *,
        event_id: str,
        event_type: str,
        now: int | None = None,
    ) -> int:
        """POST `body` to `url`; the 2xx status, or `DeliveryError` saying if a retry may help."""
        for name, value in (("event id", event_id), ("event type", event_type)):
            if not _HEADER_VALUE.fullmatch(value):
                raise DeliveryError(f"{name} is not a valid header value", permanent=True)
        try:
            target = await asyncio.to_thread(_check, url, allow_private=self.allow_private)
        except UnsafeWebhookUrl as exc:
            raise DeliveryError(f"unsafe webhook URL: {exc}", permanent=True) from exc

        timestamp = int(time.time()) if now is None else now
        headers = {
            "Content-Type": "application/cloudevents+json",
            SIGNATURE_HEADER: sign(secret, body, timestamp),
            "X-Clinicflow-Event-Id": event_id,
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
                await response.aclose()  # the body is never read: a reply cannot flood us
        except httpx.UnsupportedProtocol as exc:
            raise DeliveryError(f"webhook URL not supported: {exc}", permanent=True) from exc
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise DeliveryError("webhook timed out", permanent=False) from exc
        except httpx.TransportError as exc:
            raise DeliveryError(f"webhook {type(exc).__name__}", permanent=False) from exc
        except httpx.InvalidURL as exc:
            raise DeliveryError(f"webhook URL invalid: {exc}", permanent=True) from exc

        if 200 <= status < 300:
            return status
        if 300 <= status < 400:
            raise DeliveryError(
                f"webhook answered {status}: redirects are not followed", permanent=True
            )
        if status in (408, 429) or status >= 500:
            raise DeliveryError(f"webhook answered {status}", permanent=False)
        raise DeliveryError(f"webhook answered {status}", permanent=True)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
