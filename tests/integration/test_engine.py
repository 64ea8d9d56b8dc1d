"""The local MongoDB-wire engine serves lookups by `_id` from its index (docs/adr/0009).

Every hot path reads and updates aggregates by `_id` only; if the engine scanned for those, their
cost would grow with every stored document again. FerretDB reports the SQLite query plan in
`explain`, so this checks the plan itself, not a timing.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase


async def plan_of(db: AsyncDatabase[dict[str, Any]], command: dict[str, Any]) -> str:
    answer = await db.command("explain", command)
    if "ferretdbVersion" not in answer.get("serverInfo", {}):
        pytest.skip("MongoDB serves `_id` from its index by design")
    return " ".join(answer["queryPlanner"]["Plan"])


async def test_a_lookup_by_id_is_an_index_search(db: AsyncDatabase[dict[str, Any]]) -> None:
    await db["plans"].insert_many([{"_id": f"p{n}", "n": n} for n in range(50)])
    plan = await plan_of(db, {"find": "plans", "filter": {"_id": "p42"}})
    assert "USING INDEX" in plan
    assert "SCAN" not in plan
    assert (await db["plans"].find_one({"_id": "p42"}) or {})["n"] == 42


async def test_other_filters_still_scan(db: AsyncDatabase[dict[str, Any]]) -> None:
    """Why hot paths keep to `_id`: any other filter reads the whole collection."""
    await db["plans"].insert_many([{"_id": f"p{n}", "n": n} for n in range(5)])
    plan = await plan_of(db, {"find": "plans", "filter": {"n": 3}})
    assert "SCAN" in plan
