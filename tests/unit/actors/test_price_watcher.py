"""Unit tests for the PriceWatcher: one quote per pair, triggers once, expiry first."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from actors.price_watcher import PriceWatcher
from core.errors import DexecError, TransientDatabaseError
from core.orders import Change, Order, OrderStatus, OrderType, TimeInForce, Trigger
from storage.writes import Write, Written
from tests.kit.market import Events, FakeMarket, write_conditionally
from tests.kit.orders import T0, make_order

PAIRS = [(f"IN{k}", f"OUT{k}") for k in range(5)]


class FakeStore:
    """Orders by id; every change is conditional on the stored seq, like storage.writes."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.down = False

    async def write_batch(self, ops: Sequence[Write]) -> list[Written | DexecError]:
        if self.down:
            raise TransientDatabaseError("the database is down")
        return write_conditionally(self.orders, ops, NOW)

    async def get_orders(self, order_ids: Sequence[str]) -> list[Order | None]:
        if self.down:
            raise TransientDatabaseError("the database is down")
        return [self.orders.get(i) for i in order_ids]

    async def get_order(self, order_id: str) -> Order | None:
        return self.orders.get(order_id)


NOW = T0 + timedelta(hours=1)


def resting(order_id: str, pair: tuple[str, str], *, limit: str | None = None,
            stop: str | None = None, status: OrderStatus = OrderStatus.OPEN,
            expires_at: datetime | None = None) -> Order:
    return replace(
        make_order(status, order_id=order_id, amount_in=1000, seq=2 if status is
                   OrderStatus.OPEN else 1),
        order_type=OrderType.STOP if stop else OrderType.LIMIT,
        input_mint=pair[0], output_mint=pair[1],
        limit_price=Decimal(limit) if limit else None,
        trigger_price=Decimal(stop) if stop else None,
        time_in_force=TimeInForce.GTT if expires_at else TimeInForce.GTC,
        expires_at=expires_at)


class Watch:
    def __init__(self) -> None:
        self.store = FakeStore()
        self.market = FakeMarket()
        self.events = Events()
        self.triggered: list[str] = []
        self.closed: list[str] = []
        self.now = NOW
        self.watcher = PriceWatcher(
            self.store, self.market, self.events, interval_s=0.0,
            on_triggered=lambda o: self.triggered.append(o.order_id),
            on_closed=lambda o: self.closed.append(o.order_id), now=lambda: self.now)

    def add(self, order: Order) -> Order:
        self.store.orders[order.order_id] = order
        self.watcher.follow(order)
        return order

    def status(self, order_id: str) -> OrderStatus:
        return self.store.orders[order_id].status


@pytest.mark.parametrize("per_pair", [2, 2000])
async def test_resting_orders_cost_one_quote_per_pair_however_many_rest(per_pair: int) -> None:
    watch = Watch()
    for pair in PAIRS:
        watch.market.prices[pair] = Decimal(1)
        for k in range(per_pair):
            watch.add(resting(f"{pair[0]}-{k}", pair, limit=str(2 + k)))

    await watch.watcher.tick()

    # 10 orders or 10,000 on 5 pairs: 5 quotes, one per pair.
    assert watch.market.calls == Counter(dict.fromkeys(PAIRS, 1))
    assert not watch.triggered
    assert len(watch.watcher) == 5 * per_pair


async def test_a_price_move_sets_off_the_orders_it_crosses_each_once() -> None:
    watch = Watch()
    pair, other = PAIRS[0], PAIRS[1]
    watch.market.prices.update({pair: Decimal(100), other: Decimal(100)})
    for k in range(10):
        watch.add(resting(f"limit-{k}", pair, limit=str(101 + k)))  # 101 .. 110
        watch.add(resting(f"stop-{k}", pair, stop=str(99 - k)))  # 99 .. 90
    watch.add(resting("elsewhere", other, limit="101"))

    watch.market.prices[pair] = Decimal(105)
    await watch.watcher.tick()
    assert watch.triggered == [f"limit-{k}" for k in range(5)]  # 101 .. 105, lowest first
    assert all(watch.status(f"limit-{k}") is OrderStatus.ROUTING for k in range(5))
    trigger = watch.events.published[-1]
    assert trigger.status is OrderStatus.ROUTING and trigger.price == Decimal(105)
    assert trigger.quotes is not None and trigger.quotes[0]["quoted_at"] == 1.0

    await watch.watcher.tick()  # the same price again: nothing more
    watch.market.prices[pair] = Decimal(106)
    await watch.watcher.tick()
    watch.market.prices[pair] = Decimal(92)
    await watch.watcher.tick()
    assert watch.triggered == [*(f"limit-{k}" for k in range(6)),
                               *(f"stop-{k}" for k in range(8))]  # 99 .. 92, highest first
    assert Counter(watch.triggered).most_common(1)[0][1] == 1
    assert watch.status("elsewhere") is OrderStatus.OPEN
    assert watch.store.orders["stop-0"].triggered_at == NOW


async def test_new_orders_are_written_open_and_a_marketable_one_is_set_off() -> None:
    watch = Watch()
    pair = PAIRS[0]
    watch.market.prices[pair] = Decimal(100)
    watch.add(resting("far", pair, limit="120", status=OrderStatus.PENDING))
    watch.add(resting("near", pair, limit="99", status=OrderStatus.PENDING))
    await watch.watcher.tick()
    assert watch.status("far") is OrderStatus.OPEN
    assert watch.triggered == ["near"]
    assert [(e.order_id, e.status) for e in watch.events.published] == [
        ("far", OrderStatus.OPEN), ("near", OrderStatus.OPEN), ("near", OrderStatus.ROUTING)]


async def test_an_order_whose_time_ran_out_is_expired_before_any_price() -> None:
    # Found at start, after the engine was down past its expiry, with its price crossed.
    watch = Watch()
    pair = PAIRS[0]
    watch.market.prices[pair] = Decimal(100)
    watch.add(resting("late", pair, limit="90", expires_at=NOW - timedelta(seconds=5)))
    watch.add(resting("late-new", pair, limit="90", expires_at=NOW - timedelta(seconds=5),
                      status=OrderStatus.PENDING))
    watch.add(resting("valid", pair, limit="90", expires_at=NOW + timedelta(seconds=5)))
    await watch.watcher.tick()
    assert watch.status("late") is OrderStatus.EXPIRED
    assert watch.status("late-new") is OrderStatus.EXPIRED
    assert sorted(watch.closed) == ["late", "late-new"]
    assert watch.triggered == ["valid"]  # still valid: it executes


async def test_a_resting_order_expires_at_its_time() -> None:
    watch = Watch()
    pair = PAIRS[0]
    watch.market.prices[pair] = Decimal(100)
    watch.add(resting("gtt", pair, limit="200", expires_at=NOW + timedelta(seconds=5)))
    await watch.watcher.tick()
    assert watch.status("gtt") is OrderStatus.OPEN
    watch.now = NOW + timedelta(seconds=5)
    await watch.watcher.tick()
    assert watch.status("gtt") is OrderStatus.EXPIRED
    assert watch.closed == ["gtt"] and "gtt" not in watch.watcher
    assert watch.store.orders["gtt"].failure_reason == "expired at its time"


async def test_a_change_made_elsewhere_wins_and_the_order_is_followed_there() -> None:
    watch = Watch()
    pair = PAIRS[0]
    watch.market.prices[pair] = Decimal(100)
    order = watch.add(resting("raced", pair, limit="101"))
    # Cancelled behind the watcher's back (its copy is stale).
    result = order.apply(Change(Trigger.CANCEL, 0, error="by its owner"), NOW)
    assert result is not None
    watch.store.orders["raced"] = result[0]
    watch.market.prices[pair] = Decimal(102)
    await watch.watcher.tick()
    assert watch.triggered == []
    assert watch.closed == ["raced"]
    assert watch.status("raced") is OrderStatus.CANCELLED


async def test_a_database_outage_loses_no_resting_order() -> None:
    watch = Watch()
    pair = PAIRS[0]
    watch.market.prices[pair] = Decimal(100)
    watch.add(resting("new", pair, limit="120", status=OrderStatus.PENDING))
    watch.add(resting("open", pair, limit="101"))
    watch.store.down = True
    watch.market.prices[pair] = Decimal(130)
    await watch.watcher.tick()
    # The new order is kept to be written open; the crossed one may or may not have been
    # set off: it goes to the dispatcher, whose executor reads it (and rests it if open).
    assert "new" in watch.watcher and watch.triggered == ["open"]
    watch.store.down = False
    await watch.watcher.tick()
    await watch.watcher.tick()
    assert sorted(watch.triggered) == ["new", "open"]
    assert watch.status("new") is OrderStatus.ROUTING


async def test_removed_orders_are_never_set_off() -> None:
    watch = Watch()
    pair = PAIRS[0]
    watch.market.prices[pair] = Decimal(100)
    watch.add(resting("kept", pair, limit="101"))
    watch.add(resting("removed", pair, limit="101"))
    assert watch.watcher.remove("removed") is not None
    watch.market.prices[pair] = Decimal(102)
    await watch.watcher.tick()
    assert watch.triggered == ["kept"]
    assert watch.status("removed") is OrderStatus.OPEN


async def test_an_order_rested_after_a_failure_waits_before_it_can_be_set_off_again() -> None:
    watch = Watch()
    watch.watcher = PriceWatcher(
        watch.store, watch.market, watch.events, interval_s=0.0,
        on_triggered=lambda o: watch.triggered.append(o.order_id),
        on_closed=lambda o: watch.closed.append(o.order_id), now=lambda: NOW, cooldown_s=0.2)
    pair = PAIRS[0]
    watch.market.prices[pair] = Decimal(102)  # at its limit: it would be set off at once
    order = replace(resting("slipped", pair, limit="101"), status=OrderStatus.ROUTING)
    rested = order.apply(Change(Trigger.REST, 1, error="slippage exceeded"), NOW)
    assert rested is not None
    watch.store.orders["slipped"] = replace(rested[0], events=(rested[1],))

    waiting = asyncio.get_running_loop().create_task(watch.watcher.rest_again("slipped"))
    await asyncio.sleep(0.05)
    await watch.watcher.tick()
    assert watch.triggered == [] and "slipped" in watch.watcher  # cooling down, still held
    await waiting
    await watch.watcher.tick()
    assert watch.triggered == ["slipped"]
