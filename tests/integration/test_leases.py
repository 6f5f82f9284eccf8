"""Execution leases against the real database: one executor per order, even in one process."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from core.errors import DexecError, LeaseLost
from core.orders import Change, NewOrder, OrderType, Trigger
from core.quotes import SignedSwap
from core.tokens import TokenRegistry
from dexec.launch import Engine
from storage.locks import ExecutionLocks, Lease, lock_key
from storage.repository import OrderRepository
from storage.writes import ApplyChange, Write, Written


async def lease_of(locks: ExecutionLocks, order_id: str) -> Lease | None:
    """Lease one order, as a worker's batched leases do for many."""
    [lease] = await locks.try_acquire_many([order_id])
    return lease


async def test_a_lease_is_exclusive_within_a_process_and_across_sessions(engine: Engine) -> None:
    assert engine.settings.database_url is not None
    url = engine.settings.database_url.get_secret_value()
    here, elsewhere = ExecutionLocks(url), ExecutionLocks(url)
    order_id = str(uuid.uuid4())
    try:
        lease = await lease_of(here, order_id)
        assert lease is not None and lease.valid
        # PostgreSQL advisory locks are re-entrant per session: the same worker must still
        # refuse a second execution of the order.
        assert await lease_of(here, order_id) is None
        assert await lease_of(elsewhere, order_id) is None
        await lease.release()
        taken = await lease_of(elsewhere, order_id)
        assert taken is not None
        assert await lease_of(here, order_id) is None
        await taken.release()
        again = await lease_of(here, order_id)
        assert again is not None
        await again.release()
    finally:
        await here.close()
        await elsewhere.close()


async def write(repo: OrderRepository, op: Write) -> Written:
    """Make one write through the batched path; raise its error as the executor sees it."""
    [answer] = await repo.write_batch([op])
    if isinstance(answer, DexecError):
        raise answer
    return answer


async def test_a_superseded_lease_can_write_nothing(engine: Engine) -> None:
    """Fencing: when a lease's session dies and another executor takes the order over, the
    first executor's writes are refused even though it has not noticed yet."""
    assert engine.settings.database_url is not None
    url = engine.settings.database_url.get_secret_value()
    repo = OrderRepository(url)
    await repo.open()
    first, second = ExecutionLocks(url), ExecutionLocks(url)
    [created] = await repo.create_orders([NewOrder(
        "default", None, OrderType.MARKET, TokenRegistry().resolve("SOL").mint,
        TokenRegistry().resolve("USDC").mint, 1_000_000, 50)])
    assert not isinstance(created, DexecError)
    order, _ = created
    try:
        old = await lease_of(first, order.order_id)
        assert old is not None and old.epoch is not None
        # PostgreSQL ends the first executor's lock session (restart, idle timeout, ...).
        async with repo.db.connection() as conn:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                " AND objid = %s", (lock_key(order.order_id) & 0xFFFFFFFF,))
        new = None
        for _ in range(50):
            new = await lease_of(second, order.order_id)
            if new is not None:
                break
            await asyncio.sleep(0.1)
        assert new is not None and new.epoch == old.epoch + 1
        change = Change(Trigger.START_ROUTING, attempt=1)
        # Every byte value and an amount past 64 bits: the batched write must keep them exact.
        swap = SignedSwap("raydium", "sig-" + order.order_id, bytes(range(256)) * 2, 10,
                          2**70 + 1)
        with pytest.raises(LeaseLost):
            await write(repo, ApplyChange(order.order_id, change, old.epoch, order, swap))
        assert await repo.swaps_for_order(order.order_id) == []  # nothing of it was written
        result = await write(repo, ApplyChange(order.order_id, change, new.epoch, order))
        assert result is not None and result[0].seq == order.seq + 1
        routing = result[0]
        # A writer whose copy is stale (another change landed since) is refused, not merged.
        cancel = Change(Trigger.FAIL, attempt=0, error="cancelled", error_class="terminal")
        with pytest.raises(LeaseLost, match="changed concurrently"):
            await write(repo, ApplyChange(order.order_id, cancel, new.epoch, order))
        stored = await repo.get_order(order.order_id)
        assert stored is not None and stored.seq == order.seq + 1
        assert [e.seq for e in stored.events] == [1, 2]
        chosen = Change(Trigger.ROUTE_CHOSEN, attempt=1, venue="raydium")
        building = await write(repo, ApplyChange(order.order_id, chosen, new.epoch, routing,
                                                 swap))
        assert building is not None
        assert await repo.swaps_for_order(order.order_id) == [(swap, 1, "signed")]
        # The same signature with a later change is a harmless repeat.
        sent = Change(Trigger.TX_SENT, attempt=1, venue="raydium", signature=swap.signature)
        await write(repo, ApplyChange(order.order_id, sent, new.epoch, building[0], swap))
        assert await repo.swaps_for_order(order.order_id) == [(swap, 1, "signed")]
        await new.release()
    finally:
        await first.close()
        await second.close()
        await repo.close()
