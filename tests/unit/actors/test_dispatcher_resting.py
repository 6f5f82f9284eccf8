"""Unit tests for the Dispatcher's limit and stop orders: resting, cancel, restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from decimal import Decimal

import pytest

from actors.dispatcher import Dispatcher
from core.errors import (
    AtCapacity,
    DexecError,
    NotCancellable,
    OrderNotFound,
    TransientDatabaseError,
)
from core.limits import LatencyAdmission, OpenOrders
from core.orders import (
    Change,
    NewOrder,
    Order,
    OrderStatus,
    OrderType,
    TimeInForce,
    Trigger,
)
from storage.writes import Write, Written
from tests.kit.dispatch import FakeStore, FakeWorkers
from tests.kit.loop import settle, until
from tests.kit.market import Events, FakeMarket
from tests.kit.orders import T0, new_order


def limit_order(price: str, client_order_id: str | None = None) -> NewOrder:
    return replace(new_order(client_order_id), order_type=OrderType.LIMIT,
                   limit_price=Decimal(price), time_in_force=TimeInForce.GTC)


class Setup:
    def __init__(self, store: FakeStore, **options: object) -> None:
        self.store = store
        self.workers = FakeWorkers(1)
        self.market = FakeMarket()
        self.market.prices[(new_order().input_mint, new_order().output_mint)] = Decimal(100)
        self.events = Events()
        self.open = OpenOrders()
        self.dispatcher = Dispatcher(store, self.workers, per_worker=4, market=self.market,
                                     events=self.events, watch_interval_s=0.01,
                                     open_orders=self.open, **options)  # type: ignore[arg-type]

    async def submit(self, new: NewOrder) -> Order:
        (answer,) = await self.dispatcher.submit_many([new])
        assert not isinstance(answer, DexecError), answer
        return answer[0]

    def status(self, order_id: str) -> OrderStatus:
        return self.store.orders[order_id].status

    async def rested(self, price: str) -> Order:
        """Submit a limit order at `price` and wait until it rests (open)."""
        order = await self.submit(limit_order(price))
        await until(lambda: self.status(order.order_id) is OrderStatus.OPEN)
        return order


@pytest.fixture
async def setups() -> AsyncIterator[list[Setup]]:
    made: list[Setup] = []
    yield made
    for setup in made:
        for task in (setup.dispatcher._task, setup.dispatcher._watch_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def started(setups: list[Setup], store: FakeStore | None = None,
                  **options: object) -> Setup:
    setup = Setup(store or FakeStore(), **options)
    setups.append(setup)
    await setup.dispatcher.start()
    return setup


async def test_a_limit_order_rests_without_a_worker_until_its_price_comes(
    setups: list[Setup],
) -> None:
    s = await started(setups)
    order = await s.rested("101")
    await asyncio.sleep(0.05)
    assert s.workers.started == []
    assert s.dispatcher.stats()["resting"] == 1 and s.dispatcher.stats()["open"] == 1

    s.market.prices[(order.input_mint, order.output_mint)] = Decimal(102)
    await until(lambda: s.workers.started == [order.order_id])
    assert s.status(order.order_id) is OrderStatus.ROUTING
    assert s.dispatcher.stats()["resting"] == 0


async def test_cancel_in_each_status(setups: list[Setup]) -> None:
    s = await started(setups)
    resting = await s.rested("150")

    cancelled = await s.dispatcher.cancel(resting.order_id, "default")
    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.failure_reason == "cancelled by its owner"
    assert s.events.published[-1].status is OrderStatus.CANCELLED
    assert s.dispatcher.stats()["resting"] == 0 and len(s.open) == 0
    # A repeat answers the cancelled order, unchanged.
    assert (await s.dispatcher.cancel(resting.order_id, "default")).seq == cancelled.seq

    with pytest.raises(OrderNotFound):
        await s.dispatcher.cancel(resting.order_id, "someone-else")
    with pytest.raises(OrderNotFound):
        await s.dispatcher.cancel("no-such-order", "default")

    s.workers.gate.clear()  # market orders wait in their worker
    pending = await s.submit(new_order("m-1"))
    building = await s.submit(new_order("m-2"))
    stored = s.store.orders[building.order_id]
    for change in (Change(Trigger.START_ROUTING, 1), Change(Trigger.ROUTE_CHOSEN, 1, venue="v")):
        result = stored.apply(change, T0)
        assert result is not None
        stored = result[0]
    s.store.orders[building.order_id] = stored
    with pytest.raises(NotCancellable, match="may still land"):
        await s.dispatcher.cancel(building.order_id, "default")
    assert (await s.dispatcher.cancel(pending.order_id, "default")).status is \
        OrderStatus.CANCELLED
    s.workers.gate.set()
    await settle()
    s.store.orders[pending.order_id] = replace(s.store.orders[pending.order_id],
                                               status=OrderStatus.EXPIRED)
    with pytest.raises(NotCancellable, match="is already expired"):
        await s.dispatcher.cancel(pending.order_id, "default")


async def test_resting_orders_do_not_count_as_work_in_flight(setups: list[Setup]) -> None:
    s = await started(setups, admission=LatencyAdmission(0.5, floor=1, min_samples=1))
    for k in range(3):
        await s.submit(limit_order("150", f"l-{k}"))  # resting: admitted whatever the bound
    s.workers.gate.clear()
    await s.submit(new_order("m-1"))
    (refused,) = await s.dispatcher.submit_many([new_order("m-2")])
    assert isinstance(refused, AtCapacity)
    s.workers.gate.set()


async def test_at_start_resting_orders_rest_again_and_the_others_are_dispatched(
    setups: list[Setup],
) -> None:
    store = FakeStore()
    first = Setup(store)
    resting = await first.submit(limit_order("150", "l-1"))
    unopened = await first.submit(limit_order("150", "l-2"))  # never written open
    market = await first.submit(new_order("m-1"))
    opened = store.orders[resting.order_id].apply(Change(Trigger.REST, 0), T0)
    assert opened is not None
    store.orders[resting.order_id] = opened[0]

    s = await started(setups, store)  # a restarted manager over the same store
    await until(lambda: s.workers.started == [market.order_id])
    await until(lambda: s.status(unopened.order_id) is OrderStatus.OPEN)
    assert s.status(resting.order_id) is OrderStatus.OPEN
    assert s.dispatcher.stats()["resting"] == 2 and s.dispatcher.stats()["open"] == 3


async def test_an_order_the_executor_rested_again_is_watched_again(setups: list[Setup]) -> None:
    s = await started(setups)
    order = await s.rested("101")
    s.market.prices[(order.input_mint, order.output_mint)] = Decimal(102)

    def rests_again(order_id: str) -> None:
        stored = s.store.orders[order_id]
        result = stored.apply(Change(Trigger.REST, stored.attempt), T0)
        assert result is not None
        s.store.orders[order_id] = result[0]

    s.workers.outcomes[order.order_id] = "open"
    s.workers.gate.clear()
    await until(lambda: s.workers.started == [order.order_id])
    s.market.prices[(order.input_mint, order.output_mint)] = Decimal(100)
    rests_again(order.order_id)  # what the executor writes when the price is gone
    s.workers.gate.set()
    await until(lambda: s.dispatcher.stats()["resting"] == 1)
    assert len(s.open) == 1  # still open: its place is kept
    s.workers.outcomes.pop(order.order_id)
    s.market.prices[(order.input_mint, order.output_mint)] = Decimal(103)
    await until(lambda: s.workers.started == [order.order_id] * 2)


async def test_a_cancel_whose_answer_was_lost_still_closes_the_order(
    setups: list[Setup],
) -> None:
    s = await started(setups)
    order = await s.rested("150")
    write = s.store.write_batch

    async def written_then_lost(ops: Sequence[Write]) -> list[Written | DexecError]:
        await write(ops)
        raise TransientDatabaseError("connection lost after the commit")

    s.store.write_batch = written_then_lost  # type: ignore[method-assign]
    with pytest.raises(TransientDatabaseError):
        await s.dispatcher.cancel(order.order_id, "default")
    s.store.write_batch = write  # type: ignore[method-assign]
    # Read again at once: it is cancelled, so it is closed, not rested again.
    await until(lambda: len(s.open) == 0)
    assert s.dispatcher.stats()["resting"] == 0
    again = await s.dispatcher.cancel(order.order_id, "default")
    assert again.status is OrderStatus.CANCELLED and len(s.open) == 0
    # A copy read before the cancel never rests again.
    assert s.dispatcher._watcher is not None
    s.dispatcher._watcher.follow(replace(order, status=OrderStatus.OPEN, seq=2))
    assert s.dispatcher.stats()["resting"] == 0
