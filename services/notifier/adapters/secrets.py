"""Webhook secrets at rest: generated here, sealed with the notifier's Fernet key(s)
(`CLINICFLOW_WEBHOOK_KEY`, see `shared.keys`), opened only to sign a POST.

A database copy alone therefore cannot forge a delivery; the key can be rotated like the
health-answer key (first key seals, every key opens).
"""

from __future__ import annotations

import base64
import secrets

from services.notifier.domain.webhooks import SECRET_PREFIX
from shared.keys import fernet

SECRET_BYTES = 32


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class SecretBox:
    def __init__(self, keys: list[str]) -> None:
        self._fernet = fernet(keys)

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        return self._fernet.decrypt(sealed.encode()).decode()
