"""Ids derived from request or event data, keyed with the deployment's secret (SPEC section 6).

Retries must find their first answer, so some ids are derived rather than random: a screening
from its site and Idempotency-Key, a plan from its screening, a session from its plan, an
aftercare step from its session. An HMAC-SHA256 under `CLINICFLOW_ID_SECRET` makes them
impossible to compute without the secret, so a known key or id does not lead to another
client's records. Pure computation, no I/O, so domains may use it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from pathlib import Path


class MissingIdSecret(RuntimeError):
    """No id secret where the environment requires one."""


class Ids:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise MissingIdSecret("CLINICFLOW_ID_SECRET must hold at least 16 bytes")
        self._secret = secret

    def uuid(self, kind: str, *parts: object) -> uuid.UUID:
        message = "\x1f".join([kind, *(str(p) for p in parts)]).encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return uuid.UUID(bytes=digest[:16], version=4)


def load_ids(configured: str | None, *, production: bool, local_file: Path) -> Ids:
    """The configured secret; outside production a local one is generated once and kept."""
    if configured:
        return Ids(configured.encode())
    if production:
        raise MissingIdSecret(
            "CLINICFLOW_ID_SECRET is not set: ids derived from requests would be guessable; "
            "set the same random value (e.g. `openssl rand -hex 32`) on every service"
        )
    if not local_file.exists():
        local_file.parent.mkdir(parents=True, exist_ok=True)
        local_file.write_text(secrets.token_hex(32))
        local_file.chmod(0o600)
    return Ids(local_file.read_text().strip().encode())
