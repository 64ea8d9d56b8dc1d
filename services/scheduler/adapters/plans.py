"""Where plans live: one document per plan, its sessions inside (`shared.uow` writes them)."""

from __future__ import annotations

import uuid
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from services.scheduler.domain.model import Plan
from shared.batching import InsertBatcher
from shared.uow import AggregateStore

PLANS = "plans"
SESSIONS = "session_plans"


class PlanStore(AggregateStore[Plan]):
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        super().__init__(db[PLANS], Plan, "plan_id", history=True)
        self.sessions = db[SESSIONS]
        self.session_notes = InsertBatcher(self.sessions)

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("client_id", ASCENDING)])
        assert self.history is not None
        await self.history.create_index([("client_id", ASCENDING)])

    async def note_session(self, session_id: uuid.UUID, plan_id: uuid.UUID) -> None:
        """Which plan a session belongs to, written before the plan so it is never missing."""
        await self.session_notes.insert({"_id": str(session_id), "plan_id": str(plan_id)})

    async def by_session(self, session_id: uuid.UUID) -> Plan | None:
        note = await self.sessions.find_one({"_id": str(session_id)})
        return None if note is None else await self.get(note["plan_id"])

    async def records_reservation(self, plan_id: str, token: str) -> bool:
        plan = await self.get(plan_id)
        return plan is not None and any(s.reservation == token for s in plan.sessions)

    async def for_client(self, client_id: str) -> list[Plan]:
        """The client's plans, live and finished, newest first."""
        plans = await self.find_all({"client_id": client_id})
        return sorted(plans, key=lambda p: p.created_at, reverse=True)
