"""Plans in MongoDB: one document per plan, its sessions inside.

FerretDB v1 has no positional array updates, so a change rewrites the plan's state; callers
hold the plan's lease (`lease`) from reading it to saving it, so no change is lost.
"""

from __future__ import annotations

import uuid
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.scheduler.domain.model import Plan
from shared.envelope import Record
from shared.outbox import lease_name, push_outbox, with_outbox

PLANS = "plans"


def _document(plan: Plan) -> dict[str, Any]:
    document = plan.model_dump(mode="python")
    document["_id"] = str(plan.plan_id)
    document["plan_id"] = str(plan.plan_id)
    document["screening_id"] = str(plan.screening_id)
    document["correlation_id"] = str(plan.correlation_id)
    for session in document["sessions"]:
        session["session_id"] = str(session["session_id"])
        if session["last_event_id"] is not None:
            session["last_event_id"] = str(session["last_event_id"])
    return document


def _plan(document: dict[str, Any]) -> Plan:
    return Plan.model_validate(
        {k: v for k, v in document.items() if not k.startswith("outbox") and k != "_id"}
    )


class PlanRepository:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.plans = db[PLANS]

    async def ensure_indexes(self) -> None:
        await self.plans.create_index([("client_id", ASCENDING), ("created_at", DESCENDING)])
        await self.plans.create_index([("sessions.session_id", ASCENDING)])
        await self.plans.create_index([("sessions.reservation", ASCENDING)])

    async def get(self, plan_id: uuid.UUID) -> Plan | None:
        document = await self.plans.find_one({"_id": str(plan_id)})
        return None if document is None else _plan(document)

    async def by_session(self, session_id: uuid.UUID) -> Plan | None:
        document = await self.plans.find_one({"sessions.session_id": str(session_id)})
        return None if document is None else _plan(document)

    async def records_reservation(self, token: str) -> bool:
        return await self.plans.find_one({"sessions.reservation": token}, {"_id": 1}) is not None

    async def for_client(self, client_id: str) -> list[Plan]:
        """The client's plans, newest first."""
        cursor = self.plans.find({"client_id": client_id}).sort("created_at", DESCENDING)
        return [_plan(document) async for document in cursor]

    async def add(self, plan: Plan, records: list[Record]) -> bool:
        """Store a new plan with its events; False when it exists already."""
        try:
            await self.plans.insert_one(with_outbox(_document(plan), records))
        except DuplicateKeyError:
            return False
        return True

    def lease(self, plan_id: uuid.UUID) -> str:
        return lease_name(self.plans, str(plan_id))

    async def save(self, plan: Plan, records: list[Record]) -> None:
        """Write the plan's new state and its events in one update (lease held)."""
        document = _document(plan.model_copy(update={"version": plan.version + 1}))
        del document["_id"]
        await self.plans.update_one(
            {"_id": str(plan.plan_id)}, push_outbox({"$set": document}, records)
        )
