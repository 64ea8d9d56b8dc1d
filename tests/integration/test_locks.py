"""Leases on the real MongoDB-wire server: one holder at a time, and takeover after a crash."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from shared.locks import LeaseLost, Locks, LockTimeout

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


async def test_a_live_holder_keeps_its_lease_past_its_ttl(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    """A slow publish or SMTP send outlasts the lease's time: the holder renews it, so no
    second holder gets in meanwhile (issue 12)."""
    holder = Locks(db, ttl=timedelta(seconds=1))
    other = Locks(db, ttl=timedelta(seconds=1))
    keeper = asyncio.create_task(holder.keep_alive())
    try:
        lease = await holder.acquire("plans:slow")
        await asyncio.sleep(2.5)
        with pytest.raises(LockTimeout):
            await other.acquire("plans:slow", wait=0.3)
        await holder.release(lease)
        assert await other.try_acquire("plans:slow") is not None
    finally:
        keeper.cancel()


async def test_a_holder_that_stalled_past_its_lease_is_told_before_it_writes(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    stalled = Locks(db, ttl=timedelta(milliseconds=500))
    heir = Locks(db, ttl=timedelta(milliseconds=500))
    lease = await stalled.acquire("plans:stall")
    await stalled.check(lease)  # young: nothing to ask
    await asyncio.sleep(0.7)  # paused past its lease: nobody renewed it
    taken = await heir.acquire("plans:stall", wait=1)
    with pytest.raises(LeaseLost):
        await stalled.check(lease)
    await heir.release(taken)  # the heir's release removes the stalled holder's lease too
    with pytest.raises(LeaseLost):
        await stalled.check(lease)


async def test_leases_end_on_the_servers_clock_not_the_holders(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    """A process whose clock runs ten minutes ahead must not take a fresh lease over."""
    ahead = Locks(db, local_clock=lambda: datetime.now(UTC) + timedelta(minutes=10))
    holder = Locks(db)
    await ahead.sync_clock()
    lease = await holder.acquire("plans:skew")
    assert await ahead.try_acquire("plans:skew") is None
    await holder.release(lease)
