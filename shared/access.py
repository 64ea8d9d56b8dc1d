"""Who may do what, at which sites (SPEC section 6): roles, permissions, principals, API keys.

Pure data and functions, no I/O: the role table below is the whole access policy, and every
service enforces it through `shared.auth`. API keys are `cfk_<key_id>_<secret>`; only a SHA-256
of the secret is ever stored or published (the secret has 256 random bits, so a fast hash is as
strong as a slow one), and the key id lets a service find the record without scanning.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

ALL_SITES = "*"
KEY_PREFIX = "cfk_"

SiteScope = Annotated[str, StringConstraints(pattern=r"^(\*|[a-z0-9][a-z0-9-]{0,62})$")]
KeyId = Annotated[str, StringConstraints(pattern=r"^[a-f0-9]{16}$")]


class Role(StrEnum):
    FRONT_DESK = "front_desk"
    PRACTITIONER = "practitioner"
    CLINIC_ADMIN = "clinic_admin"
    INTEGRATOR = "integrator"
    OPS = "ops"


class Permission(StrEnum):
    SCREEN_CLIENTS = "screen_clients"
    READ_SCREENINGS = "read_screenings"
    READ_PLANS = "read_plans"
    READ_AFTERCARE = "read_aftercare"
    RESCHEDULE_SESSIONS = "reschedule_sessions"
    COMPLETE_SESSIONS = "complete_sessions"
    READ_SITES = "read_sites"
    CHANGE_SITES = "change_sites"
    ERASE_CLIENTS = "erase_clients"
    READ_AUDIT = "read_audit"
    MANAGE_WEBHOOKS = "manage_webhooks"
    READ_METRICS = "read_metrics"
    READ_OPS = "read_ops"


_FRONT_DESK = frozenset(
    {
        Permission.SCREEN_CLIENTS,
        Permission.READ_SCREENINGS,
        Permission.READ_PLANS,
        Permission.READ_AFTERCARE,
        Permission.RESCHEDULE_SESSIONS,
        Permission.READ_SITES,
    }
)
_PRACTITIONER = frozenset(
    {
        Permission.READ_SCREENINGS,
        Permission.READ_PLANS,
        Permission.READ_AFTERCARE,
        Permission.COMPLETE_SESSIONS,
        Permission.READ_SITES,
    }
)

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.FRONT_DESK: _FRONT_DESK,
    Role.PRACTITIONER: _PRACTITIONER,
    Role.CLINIC_ADMIN: _FRONT_DESK
    | _PRACTITIONER
    | {Permission.CHANGE_SITES, Permission.ERASE_CLIENTS, Permission.READ_AUDIT},
    Role.INTEGRATOR: frozenset({Permission.MANAGE_WEBHOOKS}),
    Role.OPS: frozenset({Permission.READ_METRICS, Permission.READ_OPS}),
}
"""SPEC section 6's table, the only place that says which role may do what."""


class Principal(BaseModel):
    """The caller of a request, from an API key or an OpenID Connect token."""

    model_config = ConfigDict(frozen=True)

    subject: str = Field(description="The key id, or the token's `sub`: who, in the audit log.")
    kind: str = Field(description="api_key or oidc")
    role: Role
    sites: frozenset[str]

    def may(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    def sees(self, site_id: str | None) -> bool:
        """Whether the caller's sites include `site_id` (every site with `*`)."""
        return ALL_SITES in self.sites or (site_id is not None and site_id in self.sites)

    def sees_all(self, site_ids: list[str]) -> bool:
        return all(self.sees(s) for s in site_ids)


class AccessKey(BaseModel):
    """One API key as published on the compacted `<prefix>access_keys` topic (hash only).

    Keys never change but for `revoked`; the latest record per key id is the truth.
    """

    model_config = ConfigDict(frozen=True)

    key_id: KeyId
    name: str = Field(min_length=1, max_length=100)
    role: Role
    sites: list[SiteScope] = Field(min_length=1)
    secret_sha256: str = Field(pattern=r"^[a-f0-9]{64}$")
    created_at: datetime
    created_by: str = Field(max_length=200)
    expires_at: datetime | None = None
    revoked: bool = False
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    def active(self, now: datetime) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)

    def principal(self) -> Principal:
        return Principal(
            subject=self.key_id, kind="api_key", role=self.role, sites=frozenset(self.sites)
        )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(
    *,
    name: str,
    role: Role,
    sites: list[str],
    created_by: str,
    expires_at: datetime | None = None,
) -> tuple[AccessKey, str]:
    """A new key record and the token to hand out once (it is never stored)."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    record = AccessKey(
        key_id=key_id,
        name=name,
        role=role,
        sites=sorted(set(sites)),
        secret_sha256=_digest(secret),
        created_at=datetime.now(UTC),
        created_by=created_by,
        expires_at=expires_at,
    )
    return record, f"{KEY_PREFIX}{key_id}_{secret}"


def split_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of something shaped like an API key, else None."""
    if not token.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = token.removeprefix(KEY_PREFIX).partition("_")
    if not sep or len(key_id) != 16 or not secret:
        return None
    return key_id, secret


def matches(record: AccessKey, secret: str) -> bool:
    return hmac.compare_digest(record.secret_sha256, _digest(secret))
