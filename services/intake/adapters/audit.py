"""The audit log in intake's MongoDB: append-only, one document per entry, newest first.

Entries are inserted with their id as `_id` and never updated or deleted, so a redelivered
entry (from the audit topic, or a key the view reads again at start) is stored once.
"""

from __future__ import annotations

from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.access import ALL_SITES, AccessKey
from shared.audit import AuditAction, AuditEntry

AUDIT = "audit"


class AuditLog:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.entries = db[AUDIT]

    async def ensure_indexes(self) -> None:
        await self.entries.create_index([("sites", 1), ("at", DESCENDING)], name="by_site")

    async def append(self, item: AuditEntry) -> None:
        document = {"_id": item.audit_id, **item.model_dump(exclude={"audit_id"})}
        try:
            await self.entries.insert_one(document)
        except DuplicateKeyError:
            return

    async def newest(self, sites: list[str] | None, limit: int) -> list[AuditEntry]:
        """Entries touching any of `sites` (all entries for None), newest first."""
        query: dict[str, Any] = {} if sites is None else {"sites": {"$in": [*sites, ALL_SITES]}}
        cursor = self.entries.find(query).sort("at", DESCENDING).limit(limit)
        return [AuditEntry.model_validate({**doc, "audit_id": doc["_id"]}) async for doc in cursor]

    async def key_changed(self, key_id: str, key: AccessKey | None) -> None:
        """Keys are created and revoked by the CLI; their records are the audit trail."""
        if key is None:
            return
        changes = [(AuditAction.KEY_CREATED, key.created_at, key.created_by)]
        if key.revoked:
            at = key.revoked_at or key.created_at
            changes.append((AuditAction.KEY_REVOKED, at, key.revoked_by or "unknown"))
        for action, at, actor in changes:
            await self.append(
                AuditEntry(
                    audit_id=f"{action.value}:{key_id}",
                    at=at,
                    actor=actor,
                    actor_kind="cli",
                    role=None,
                    action=action,
                    resource_type="api_key",
                    resource_id=key_id,
                    sites=key.sites,
                )
            )
