"""The audit log's entries (SPEC section 6): who did what to which resource, at which site.

Intake keeps the log and serves `GET /v1/audit`. Its own entries it writes directly; the
scheduler's travel on the `<prefix>audit` topic inside the same outbox write as the change they
record, so an entry exists exactly when the change does. Entries hold ids and codes only.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from shared.access import Principal
from shared.envelope import Record


class AuditAction(StrEnum):
    SCREENING_READ = "screening_read"
    CLIENT_ERASED = "client_erased"
    SESSION_COMPLETED = "session_completed"
    SITE_CHANGED = "site_changed"
    KEY_CREATED = "key_created"
    KEY_REVOKED = "key_revoked"


class AuditEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    audit_id: str = Field(min_length=1, max_length=200)
    at: datetime
    actor: str = Field(description="The key id or the token's subject.")
    actor_kind: str = Field(description="api_key, oidc or cli")
    role: str | None
    action: AuditAction
    resource_type: str
    resource_id: str
    sites: list[str] = Field(description="The sites the resource belongs to (`*`: all).")


def entry(
    principal: Principal,
    action: AuditAction,
    resource_type: str,
    resource_id: str,
    site_id: str,
    *,
    at: datetime | None = None,
) -> AuditEntry:
    return AuditEntry(
        audit_id=str(uuid.uuid4()),
        at=at or datetime.now(UTC),
        actor=principal.subject,
        actor_kind=principal.kind,
        role=principal.role.value,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        sites=[site_id],
    )


def audit_record(item: AuditEntry, topic: str) -> Record:
    """The entry as an outbox record for the audit topic."""
    value = json.dumps(item.model_dump(mode="json"), separators=(",", ":")).encode()
    return Record(
        topic=topic,
        key=item.resource_id,
        value=value,
        headers={"content-type": "application/json"},
        event_id=item.audit_id,
    )
