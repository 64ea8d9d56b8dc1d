"""How a due aftercare step reaches the client: log (the default), email over SMTP, and SMS.

Every channel takes a `Message` (what to say) and the client's `ClientContact` (where to say it)
and either delivers or raises `DeliveryError`, whose `permanent` flag tells the caller whether a
retry could help. Contact details (email address, phone number) are never logged.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Protocol

import aiosmtplib

from shared.events import ClientContact
from shared.vocabulary import Locale

logger = logging.getLogger("clinicflow.aftercare")


@dataclass(frozen=True)
class Message:
    """One due aftercare step, already worded in the client's locale."""

    aftercare_id: str
    client_id: str
    step: str
    locale: Locale
    title: str
    instructions: list[str]
    due_at: datetime


class DeliveryError(Exception):
    """A message could not be delivered; `permanent` when retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Channel(Protocol):
    name: str

    def accepts(self, contact: ClientContact) -> bool: ...

    async def send(self, message: Message, contact: ClientContact) -> None: ...


def _check_recipient(message: Message, contact: ClientContact) -> None:
    # Sending one client's aftercare to another client's address would leak it.
    if message.client_id != contact.client_id:
        raise DeliveryError("the contact is not the message's client", permanent=True)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class LogChannel:
    """The default channel: one INFO line per message, readable in the service's output."""

    name = "log"

    def accepts(self, contact: ClientContact) -> bool:
        return True

    async def send(self, message: Message, contact: ClientContact) -> None:
        _check_recipient(message, contact)
        logger.info(
            "aftercare %s for client %s: %s — %s",
            message.step,
            message.client_id,
            _one_line(message.title),
            " / ".join(_one_line(line) for line in message.instructions),
        )


_GREETING = {Locale.EN: "Hello {name},", Locale.FR: "Bonjour {name},"}
_SIGN_OFF = {Locale.EN: "Your clinic's care team", Locale.FR: "L'équipe soins de votre clinique"}


def email_body(message: Message, full_name: str) -> str:
    greeting = _GREETING.get(message.locale, _GREETING[Locale.EN])
    sign_off = _SIGN_OFF.get(message.locale, _SIGN_OFF[Locale.EN])
    lines = [greeting.format(name=_one_line(full_name)), ""]
    lines += [f"- {_one_line(line)}" for line in message.instructions]
    lines += ["", sign_off, ""]
    return "\n".join(lines)


class EmailChannel:
    """Plain-text email over SMTP (aiosmtplib), one connection per message.

    Connection failures, timeouts and 4xx replies are transient. A refused recipient (5xx) or a
    rejected message (5xx on DATA) is permanent; a refused login or sender is a deployment
    problem that fixing the configuration cures, so it stays transient and nothing is lost.
    """

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        username: str | None = None,
        password: str | None = None,
        start_tls: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self._username = username
        self._password = password
        self.start_tls = start_tls
        self.timeout = timeout
        domain = sender.rpartition("@")[2].strip(" >") or "clinicflow.invalid"
        self._msgid_domain = re.sub(r"[^A-Za-z0-9.-]", "", domain) or "clinicflow.invalid"

    def accepts(self, contact: ClientContact) -> bool:
        return contact.email is not None

    def build(self, message: Message, contact: ClientContact) -> EmailMessage:
        if contact.email is None:
            raise DeliveryError("the client has no email address", permanent=True)
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = contact.email
        email["Subject"] = _one_line(message.title)
        email["Date"] = format_datetime(datetime.now(UTC))
        # Stable across retries of one step, so a receiving system can spot a duplicate.
        local = re.sub(r"[^A-Za-z0-9.-]", "", message.aftercare_id) or "step"
        email["Message-ID"] = f"<aftercare-{local}@{self._msgid_domain}>"
        email["Content-Language"] = str(message.locale)
        email.set_content(email_body(message, contact.full_name))
        return email

    async def send(self, message: Message, contact: ClientContact) -> None:
        _check_recipient(message, contact)
        email = self.build(message, contact)
        try:
            await aiosmtplib.send(
                email,
                hostname=self.host,
                port=self.port,
                username=self._username,
                password=self._password,
                start_tls=self.start_tls,
                timeout=self.timeout,
                local_hostname="clinicflow-notifier",
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            transient = bool(codes) and all(400 <= code < 500 for code in codes)
            raise DeliveryError(
                f"SMTP recipient refused ({', '.join(map(str, codes))})", permanent=not transient
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            permanent = exc.code >= 500 and not isinstance(
                exc, aiosmtplib.SMTPAuthenticationError | aiosmtplib.SMTPSenderRefused
            )
            raise DeliveryError(
                f"SMTP {type(exc).__name__} {exc.code}", permanent=permanent
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(f"SMTP {type(exc).__name__}", permanent=False) from exc


class SmsProvider(Protocol):
    async def send_sms(self, to: str, text: str) -> None: ...


_sms_client: ContextVar[str | None] = ContextVar("sms_client", default=None)


class LoggingSmsProvider:
    """The default SMS provider: logs that a text went to a client, never the number."""

    async def send_sms(self, to: str, text: str) -> None:
        logger.info(
            "sms to %s (%d chars): %s", _sms_client.get() or "a client", len(text), _one_line(text)
        )


_ELLIPSIS = "..."


def sms_text(title: str, instructions: list[str], max_chars: int) -> str:
    """The title and the instructions, one per line, cut at a word boundary to `max_chars`."""
    text = "\n".join([_one_line(title), *(f"- {_one_line(line)}" for line in instructions)])
    if len(text) <= max_chars:
        return text
    room = max_chars - len(_ELLIPSIS)
    cut = text[: room + 1]
    boundary = max(cut.rfind(" "), cut.rfind("\n"))
    head = cut[:boundary] if boundary >= room // 2 else text[:room]
    return head.rstrip(" \n-,;:.") + _ELLIPSIS


class SmsChannel:
    """Text messages through an `SmsProvider`; the provider's own errors count as transient."""

    name = "sms"

    def __init__(self, provider: SmsProvider, *, max_chars: int = 480) -> None:
        if max_chars < 20:
            raise ValueError("max_chars must be at least 20")
        self.provider = provider
        self.max_chars = max_chars

    def accepts(self, contact: ClientContact) -> bool:
        return contact.phone is not None

    async def send(self, message: Message, contact: ClientContact) -> None:
        _check_recipient(message, contact)
        if contact.phone is None:
            raise DeliveryError("the client has no phone number", permanent=True)
        text = sms_text(message.title, message.instructions, self.max_chars)
        token = _sms_client.set(message.client_id)
        try:
            await self.provider.send_sms(contact.phone, text)
        except DeliveryError:
            raise
        except Exception as exc:
            raise DeliveryError(f"SMS provider {type(exc).__name__}", permanent=False) from exc
        finally:
            _sms_client.reset(token)
