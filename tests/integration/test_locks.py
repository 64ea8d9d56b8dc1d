"""Leases on the real MongoDB-wire server: one holder at a time, and takeover after a crash."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from shared.locks import Locks, LockTimeout

pytestmark = pytest.mark.integration


async def test_concurrent_read_modify_writes_under_a_lease_lose_nothing(
    db: AsyncDatabase[dict[str, Any]], locks: Locks
) -> None:
    counters = db["counters"]
    await counters.insert_one({"_id": "c", "n": 0})

    async def bump(times: int) -> None:
        for _ in range(times):
            async with locks.hold("counters:c"):
                current = await counters.find_one({"_id": "c"})
                assert current is not None
                await counters.update_one({"_id": "c"}, {"$set": {"n": current["n"] + 1}})

    await asyncio.gather(*(bump(15) for _ in range(8)))
    final = await counters.find_one({"_id": "c"})
    assert final is not None
    assert final["n"] == 120


async def test_only_one_of_many_takes_a_free_lease(locks: Locks) -> None:
    leases = await asyncio.gather(*(locks.try_acquire("plans:p1") for _ in range(12)))
    assert sum(lease is not None for lease in leases) == 1


async def test_a_dead_holders_lease_is_taken_over_after_it_expires(locks: Locks) -> None:
    dead = await locks.try_acquire("plans:p2", ttl=timedelta(milliseconds=300))
    assert dead is not None
    assert await locks.try_acquire("plans:p2") is None
    with pytest.raises(LockTimeout):
        async with locks.hold("plans:p2", wait=0.1):
            pass
    await asyncio.sleep(0.4)
    heir = await locks.try_acquire("plans:p2")
    assert heir is not None
    assert heir.generation == dead.generation + 1
    await locks.release(heir)
    assert await locks.try_acquire("plans:p2") is not None
