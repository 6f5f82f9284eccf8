"""The repository against the real database: what one read returns is one moment's order."""

from __future__ import annotations

import asyncio

from core.errors import DexecError
from core.orders import Change, NewOrder, Order, OrderType, Trigger
from core.tokens import TokenRegistry
from dexec.launch import Engine
from storage.repository import OrderRepository
from storage.writes import ApplyChange


async def test_an_order_read_while_it_changes_matches_its_own_history(engine: Engine) -> None:
    """The order row, its events and its quotes are read in one snapshot: an event that
    commits between the reads must not come back newer than the order's seq (a WebSocket
    subscriber was sent that event twice: once in the state, once live)."""
    assert engine.settings.database_url is not None
    repo = OrderRepository(engine.settings.database_url.get_secret_value())
    await repo.open()
    tokens = TokenRegistry()
    [created] = await repo.create_orders([NewOrder(
        "default", None, OrderType.MARKET, tokens.resolve("SOL").mint,
        tokens.resolve("USDC").mint, 1_000_000, 50)])
    assert not isinstance(created, DexecError)
    order: Order = created[0]
    done = asyncio.Event()

    async def writer() -> None:
        nonlocal order
        try:
            changes = [Change(Trigger.START_ROUTING, attempt=1)] + [
                Change(Trigger.RETRY, attempt=n) for n in range(2, 150)]
            for change in changes:
                [answer] = await repo.write_batch([ApplyChange(order.order_id, change, None,
                                                               order)])
                assert not isinstance(answer, DexecError) and answer is not None
                order = answer[0]
        finally:
            done.set()

    reads = 0
    try:
        task = asyncio.get_running_loop().create_task(writer())
        while not done.is_set():
            read = await repo.get_order(order.order_id)
            assert read is not None
            assert [e.seq for e in read.events] == list(range(1, read.seq + 1))
            assert read.events[-1].status == read.status
            reads += 1
        await task
    finally:
        await repo.close()
    assert reads > 10 and order.seq == 150
