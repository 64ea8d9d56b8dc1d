"""An integrator's webhook subscription (SPEC section 7): which event types of which sites go to
which URL, signed with which secrets, and whether its receiver is healthy enough to keep.

Only its owner (the key or user that created it) may see or change it. Ending it keeps the
record, inactive, so that its past deliveries can still be listed. Its secrets are stored
sealed (encrypted by the notifier's key); this model never sees one in the clear.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, timedelta

from pydantic import BaseModel

from shared.aggregate import Aggregate

SECRET_PREFIX = "whsec_"  # noqa: S105 (the Standard Webhooks prefix, not a secret)
SECRET_MIN_BYTES = 24
ROTATION_OVERLAP = timedelta(hours=24)
"""How long a replaced secret keeps signing beside the new one (SPEC section 7)."""
DISABLE_AFTER = timedelta(days=5)
"""A subscription whose deliveries all failed for this long is disabled (SPEC section 7)."""
_SECRET = re.compile(r"whsec_[A-Za-z0-9+/]+={0,2}")


def secret_problem(secret: str) -> str | None:
    """Why `secret` is not a Standard Webhooks secret, or None when it is one."""
    if not _SECRET.fullmatch(secret):
        return "must be `whsec_` followed by base64"
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return "must be `whsec_` followed by valid base64"
    if len(key) < SECRET_MIN_BYTES:
        return f"must hold at least {SECRET_MIN_BYTES} random bytes"
    return None


class SigningSecret(BaseModel):
    sealed: str
    created_at: datetime
    retires_at: datetime | None = None


class Webhook(Aggregate):
    webhook_id: str
    url: str
    events: list[str]
    secrets: list[SigningSecret]
    owner: str
    sites: list[str]
    active: bool = True
    created_at: datetime
    failing_since: datetime | None = None
    disabled_at: datetime | None = None
    disabled_reason: str | None = None

    @property
    def status(self) -> str:
        """`active`, `disabled` (its receiver failed too long: recover it) or `ended`."""
        if not self.active:
            return "ended"
        return "disabled" if self.disabled_at is not None else "active"

    def covers(self, site_id: str) -> bool:
        """An integrator's webhook receives the events of its own sites only."""
        return "*" in self.sites or site_id in self.sites

    def wants(self, event_type: str, site_id: str) -> bool:
        return self.active and event_type in self.events and self.covers(site_id)

    def owned_by(self, owner: str) -> bool:
        return self.owner == owner

    def signing(self, now: datetime) -> list[str]:
        """The sealed secrets that sign a POST sent at `now`: the current one, and a replaced
        one for a day after its rotation, so receivers can switch without losing a message."""
        return [s.sealed for s in self.secrets if s.retires_at is None or s.retires_at > now]

    def rotate(self, sealed: str, now: datetime) -> None:
        """Sign with `sealed` from now on; the current secret keeps signing for a day."""
        kept = [s for s in self.secrets if s.retires_at is None or s.retires_at > now]
        for secret in kept:
            if secret.retires_at is None:
                secret.retires_at = now + ROTATION_OVERLAP
        self.secrets = [*kept, SigningSecret(sealed=sealed, created_at=now)]

    def delivered(self) -> bool:
        """A delivery got through: the receiver is healthy again. True when that changed it."""
        if self.failing_since is None:
            return False
        self.failing_since = None
        return True

    def failed(self, now: datetime) -> bool:
        """A delivery attempt failed; True when that changed it (failing from now, or disabled
        because every delivery failed for `DISABLE_AFTER`)."""
        if self.failing_since is None:
            self.failing_since = now
            return True
        if self.disabled_at is None and now - self.failing_since >= DISABLE_AFTER:
            self.disabled_at = now
            self.disabled_reason = (
                f"every delivery failed since {self.failing_since.isoformat()} "
                f"({DISABLE_AFTER.days} days)"
            )
            return True
        return False

    def recover(self) -> None:
        """Its owner says the receiver is back: deliver again, and count failures afresh."""
        self.disabled_at = None
        self.disabled_reason = None
        self.failing_since = None

    def unsubscribe(self) -> bool:
        """Stop deliveries to it; False when it had ended already."""
        if not self.active:
            return False
        self.active = False
        return True
