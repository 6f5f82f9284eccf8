"""Execution leases against the real database: one executor per order, even in one process."""

from __future__ import annotations

import uuid

from dexec.launch import Engine
from storage.locks import ExecutionLocks


async def test_a_lease_is_exclusive_within_a_process_and_across_sessions(engine: Engine) -> None:
    assert engine.settings.database_url is not None
    url = engine.settings.database_url.get_secret_value()
    here, elsewhere = ExecutionLocks(url), ExecutionLocks(url)
    order_id = str(uuid.uuid4())
    try:
        lease = await here.try_acquire(order_id)
        assert lease is not None and lease.valid
        # PostgreSQL advisory locks are re-entrant per session: the same worker must still
        # refuse a second execution of the order.
        assert await here.try_acquire(order_id) is None
        assert await elsewhere.try_acquire(order_id) is None
        await lease.release()
        taken = await elsewhere.try_acquire(order_id)
        assert taken is not None
        assert await here.try_acquire(order_id) is None
        await taken.release()
        again = await here.try_acquire(order_id)
        assert again is not None
        await again.release()
    finally:
        await here.close()
        await elsewhere.close()
