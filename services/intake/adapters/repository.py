"""Where intake's aggregates live: screenings and clients (`shared.uow` writes them)."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from services.intake.domain.records import Client, Screening
from shared.uow import AggregateStore

Document = dict[str, Any]
SCREENINGS = "screenings"
CLIENTS = "clients"


class IntakeRepository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.screenings = AggregateStore(db[SCREENINGS], Screening, "screening_id")
        self.clients = AggregateStore(db[CLIENTS], Client, "client_id")

    async def ensure_indexes(self) -> None:
        await self.screenings.collection.create_index([("client_id", ASCENDING)], name="by_client")

    async def home_site(self, client_id: str) -> str | None:
        """The site where the client was first screened; None for a client never seen."""
        client = await self.clients.collection.find_one({"_id": client_id}, {"site_id": 1})
        return None if client is None else str(client["site_id"])

    async def screenings_of(self, client_id: str) -> list[str]:
        cursor = self.screenings.collection.find({"client_id": client_id}, {"_id": 1})
        return [str(doc["_id"]) async for doc in cursor]
