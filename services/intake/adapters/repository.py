"""Clients and screenings in MongoDB; each write carries its events in the document's outbox."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.envelope import Record
from shared.locks import Locks
from shared.outbox import lease_name, push_outbox, with_outbox

Document = dict[str, Any]
SCREENINGS = "screenings"
CLIENTS = "clients"
PERSONAL_SCREENING_FIELDS = (
    "health",
    "treatment",
    "skin",
    "locale",
    "reasons",
    "recheck_after",
    "idempotency_key",
    "request_fingerprint",
)
"""What erasure drops from each screening (SPEC 6): answers, reasons derived from them, the
recheck date and the idempotency record. Ids, site, outcome and dates stay, for the counts."""


class IntakeRepository:
    """Every change to an existing document is made under its lease (`shared.locks`)."""

    def __init__(self, db: AsyncDatabase[Document], locks: Locks) -> None:
        self.screenings = db[SCREENINGS]
        self.clients = db[CLIENTS]
        self.locks = locks

    async def ensure_indexes(self) -> None:
        await self.screenings.create_index([("client_id", ASCENDING)], name="by_client")

    async def get_screening(self, screening_id: str) -> Document | None:
        return await self.screenings.find_one({"_id": screening_id})

    async def home_site(self, client_id: str) -> str | None:
        """The site where the client was first screened; None for a client never seen."""
        client = await self.clients.find_one({"_id": client_id}, {"site_id": 1})
        if client is not None:
            return str(client["site_id"])
        screening = await self.screenings.find_one({"client_id": client_id}, {"site_id": 1})
        return None if screening is None else str(screening["site_id"])

    async def add_screening(self, document: Document, records: list[Record]) -> bool:
        """Store a screening with its event; False when that id exists already (a replay)."""
        try:
            await self.screenings.insert_one(with_outbox(document, records))
        except DuplicateKeyError:
            return False
        return True

    async def save_contact(
        self,
        client_id: str,
        site_id: str,
        contact: Document,
        event: Callable[[], Record],
    ) -> bool:
        """Store the client's contact details; publish them only when they changed."""
        async with self.locks.hold(lease_name(self.clients, client_id)):
            current = await self.clients.find_one({"_id": client_id})
            if current is not None and current.get("contact") == contact:
                return False
            now = datetime.now(UTC)
            update = push_outbox(
                {
                    "$set": {"contact": contact, "updated_at": now},
                    "$setOnInsert": {"site_id": site_id},
                    "$unset": {"erased_at": ""},
                },
                [event()],
            )
            await self.clients.update_one({"_id": client_id}, update, upsert=True)
            return True

    async def erase_client(self, client_id: str, tombstone: Record) -> bool:
        """Drop personal and health data; screenings keep ids and outcomes. False if unknown."""
        screening_ids = [
            doc["_id"] async for doc in self.screenings.find({"client_id": client_id}, {"_id": 1})
        ]
        async with self.locks.hold(lease_name(self.clients, client_id)):
            client = await self.clients.find_one({"_id": client_id})
            if client is None and not screening_ids:
                return False
            for screening_id in screening_ids:
                async with self.locks.hold(lease_name(self.screenings, screening_id)):
                    await self.screenings.update_one(
                        {"_id": screening_id},
                        {
                            "$unset": dict.fromkeys(PERSONAL_SCREENING_FIELDS, ""),
                            "$set": {"erased": True},
                        },
                    )
            if client is not None and client.get("erased_at") and "contact" not in client:
                return True
            now = datetime.now(UTC)
            update = push_outbox(
                {"$unset": {"contact": ""}, "$set": {"erased_at": now, "updated_at": now}},
                [tombstone],
            )
            await self.clients.update_one({"_id": client_id}, update, upsert=True)
            return True
