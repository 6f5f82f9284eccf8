"""Limit and stop orders, time in force, cancel and expiry, end to end on the simulated venues.

Prices follow a scripted path: the chain's `move_pair` hook moves a pair on every venue (and
its fair price, so the drift does not pull it back). Each test moves its own pair and the
fixture moves it back, so the other tests keep the market they expect.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

import httpx
import psycopg
import pytest
import ray
import websockets

from actors.shell import CHAIN, MANAGER
from dexec.launch import Engine
from tests.integration.client import TERMINAL, wait_terminal

DECIMALS = {"SOL": 9, "USDC": 6, "USDT": 6, "RAY": 6}


class Market:
    """Steer pairs' prices; every move is undone after the test."""

    def __init__(self, engine: Engine) -> None:
        self._chain = ray.get_actor(CHAIN, namespace=engine.settings.namespace)
        self._moved: list[tuple[str, str, int]] = []

    def move(self, x: str, y: str, bps: int) -> None:
        ray.get(self._chain.move_pair.remote(x, y, bps))
        self._moved.append((x, y, bps))

    def undo(self) -> None:
        for x, y, bps in reversed(self._moved):
            # The inverse of a move by (1 + b): a move by 1 / (1 + b) - 1.
            back = round((Decimal(10_000) / (10_000 + bps) - 1) * 10_000)
            ray.get(self._chain.move_pair.remote(x, y, back))


@pytest.fixture
def market(engine: Engine) -> Iterator[Market]:
    steer = Market(engine)
    yield steer
    steer.undo()


async def best_price(client: httpx.AsyncClient, x: str, y: str, amount: str) -> Decimal:
    """The best net quote's price for `amount` of x, in y per x (token units)."""
    response = await client.get("/api/quotes", params={
        "input_mint": x, "output_mint": y, "amount": amount})
    assert response.status_code == 200, response.text
    best = response.json()["best"]
    return (Decimal(best["amount_out"]).scaleb(-DECIMALS[y])
            / Decimal(best["amount_in"]).scaleb(-DECIMALS[x]))


def price_text(value: Decimal) -> str:
    return f"{value.quantize(Decimal('1e-9')):f}"


async def submit(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/orders", json={"slippage_bps": 100, **body})
    assert response.status_code == 202, response.text
    order: dict[str, Any] = response.json()
    return order


async def wait_status(client: httpx.AsyncClient, order_id: str, status: str,
                      timeout_s: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        order: dict[str, Any] = (await client.get(f"/api/orders/{order_id}")).json()
        if order["status"] == status:
            return order
        assert time.monotonic() < deadline, f"{order_id} is {order['status']}, not {status}"
        await asyncio.sleep(0.05)


async def rest_limits(client: httpx.AsyncClient, x: str, y: str, amount: str, above: str,
                      count: int) -> list[dict[str, Any]]:
    """Submit `count` limit orders `above` times the best price and wait until all rest."""
    now = await best_price(client, x, y, amount)
    orders = [await submit(client, type="limit", input_mint=x, output_mint=y, amount=amount,
                           limit_price=price_text(now * Decimal(above)))
              for _ in range(count)]
    for order in orders:
        await wait_status(client, order["order_id"], "open")
    return orders


def statuses(order: dict[str, Any]) -> list[str]:
    return [e["status"] for e in order["events"]]


def swaps_of(db: psycopg.Connection[Any], order_id: str) -> int:
    row = db.execute("SELECT count(*) FROM swap_transactions WHERE order_id = %s",
                     (order_id,)).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_limit_order_rests_then_executes_at_its_limit_when_the_price_comes(
    api: str, market: Market, db: psycopg.Connection[Any]
) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        now = await best_price(client, "RAY", "USDC", "10")
        limit = now * Decimal("1.03")
        order = await submit(client, type="limit", input_mint="RAY", output_mint="USDC",
                             amount="10", limit_price=price_text(limit))
        assert order["time_in_force"] == "gtc"
        assert Decimal(order["limit_price"]) == Decimal(price_text(limit))
        resting = await wait_status(client, order["order_id"], "open")
        await asyncio.sleep(1.0)  # a few quotes of the pair: still short of the limit
        assert (await wait_status(client, order["order_id"], "open"))["seq"] == resting["seq"]
        assert swaps_of(db, order["order_id"]) == 0

        market.move("RAY", "USDC", 600)
        done = await wait_terminal(client, order["order_id"])

    assert done["status"] == "confirmed", done["failure_reason"]
    assert statuses(done) == ["pending", "open", "routing", "building", "submitted",
                              "confirmed"]
    trigger = done["events"][2]
    assert Decimal(trigger["price"]) >= limit  # the quote that crossed, carried by the event
    (seen,) = trigger["quotes"]
    assert seen["quoted_at"] > 0
    assert Decimal(done["price"]) >= limit
    least = (limit * 10).scaleb(6).to_integral_value(rounding=ROUND_CEILING)
    assert int(done["amount_out_base"]) >= least
    row = db.execute("SELECT min_amount_out FROM swap_transactions WHERE order_id = %s",
                     (order["order_id"],)).fetchone()
    assert row is not None and int(row[0]) >= least  # the swap itself refuses less


async def test_a_limit_order_the_market_already_pays_executes_at_once(api: str) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        now = await best_price(client, "SOL", "USDC", "0.5")
        order = await submit(client, type="limit", input_mint="SOL", output_mint="USDC",
                             amount="0.5", limit_price=price_text(now * Decimal("0.97")))
        done = await wait_terminal(client, order["order_id"])
    assert done["status"] == "confirmed", done["failure_reason"]
    assert statuses(done)[:3] == ["pending", "open", "routing"]


async def test_a_stop_order_becomes_a_market_order_when_the_price_falls_to_it(
    api: str, market: Market
) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        now = await best_price(client, "SOL", "USDT", "0.2")
        trigger = now * Decimal("0.97")
        order = await submit(client, type="stop", input_mint="SOL", output_mint="USDT",
                             amount="0.2", trigger_price=price_text(trigger))
        await wait_status(client, order["order_id"], "open")
        market.move("SOL", "USDT", -600)
        done = await wait_terminal(client, order["order_id"])
    assert done["status"] == "confirmed", done["failure_reason"]
    assert statuses(done) == ["pending", "open", "routing", "building", "submitted",
                              "confirmed"]
    assert done["triggered_at"] is not None
    assert Decimal(done["events"][2]["price"]) <= trigger


async def test_a_stop_limit_order_waits_as_a_limit_order_once_triggered(
    api: str, market: Market
) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        now = await best_price(client, "RAY", "SOL", "20")
        order = await submit(client, type="stop", input_mint="RAY", output_mint="SOL",
                             amount="20", trigger_price=price_text(now * Decimal("0.97")),
                             limit_price=price_text(now * Decimal("0.99")))
        await wait_status(client, order["order_id"], "open")
        market.move("RAY", "SOL", -600)  # triggered, but below its limit: it rests again
        rested = await wait_status(client, order["order_id"], "open", timeout_s=10)
        deadline = time.monotonic() + 10
        while rested["triggered_at"] is None:
            assert time.monotonic() < deadline, "the stop never triggered"
            await asyncio.sleep(0.05)
            rested = (await client.get(f"/api/orders/{order['order_id']}")).json()
        rested = await wait_status(client, order["order_id"], "open")
        market.move("RAY", "SOL", 900)  # back above the limit
        done = await wait_terminal(client, order["order_id"])
    assert done["status"] == "confirmed", done["failure_reason"]
    assert statuses(done)[:4] == ["pending", "open", "routing", "open"]
    assert Decimal(done["price"]) >= now * Decimal("0.99")


async def test_ioc_tries_once_against_the_current_quotes(api: str,
                                                         db: psycopg.Connection[Any]) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        now = await best_price(client, "SOL", "USDC", "0.3")
        missed = await submit(client, type="limit", time_in_force="ioc", input_mint="SOL",
                              output_mint="USDC", amount="0.3",
                              limit_price=price_text(now * Decimal("1.05")))
        filled = await submit(client, type="limit", time_in_force="ioc", input_mint="SOL",
                              output_mint="USDC", amount="0.3",
                              limit_price=price_text(now * Decimal("0.95")))
        missed = await wait_terminal(client, missed["order_id"])
        filled = await wait_terminal(client, filled["order_id"])
    assert missed["status"] == "expired"
    assert statuses(missed) == ["pending", "routing", "expired"]
    assert "ioc" in missed["failure_reason"]
    assert missed["events"][-1]["quotes"]  # the quote it was tried against
    assert swaps_of(db, missed["order_id"]) == 0
    assert filled["status"] == "confirmed", filled["failure_reason"]
    assert statuses(filled) == ["pending", "routing", "building", "submitted", "confirmed"]


async def test_a_gtt_order_expires_at_its_time(api: str, db: psycopg.Connection[Any]) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        now = await best_price(client, "SOL", "USDC", "0.1")
        expires = datetime.now(UTC) + timedelta(seconds=1.5)
        order = await submit(client, type="limit", time_in_force="gtt",
                             expires_at=expires.isoformat(), input_mint="SOL",
                             output_mint="USDC", amount="0.1",
                             limit_price=price_text(now * 2))
        await wait_status(client, order["order_id"], "open")
        done = await wait_terminal(client, order["order_id"], timeout_s=10)
    assert done["status"] == "expired"
    assert statuses(done) == ["pending", "open", "expired"]
    expired_at = datetime.fromisoformat(done["events"][-1]["at"])
    assert expires <= expired_at < expires + timedelta(seconds=2)
    assert swaps_of(db, order["order_id"]) == 0


async def test_cancel_in_each_status(api: str, ws_url: str, db: psycopg.Connection[Any],
                                     faults: Any) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        now = await best_price(client, "SOL", "USDC", "0.1")
        resting = await submit(client, type="limit", input_mint="SOL", output_mint="USDC",
                               amount="0.1", limit_price=price_text(now * 2))
        await wait_status(client, resting["order_id"], "open")
        response = await client.post(f"/api/orders/{resting['order_id']}/cancel")
        assert response.status_code == 200, response.text
        cancelled = response.json()
        assert cancelled["status"] == "cancelled"
        assert statuses(cancelled) == ["pending", "open", "cancelled"]
        # A repeat answers the same cancelled order.
        again = await client.post(f"/api/orders/{resting['order_id']}/cancel")
        assert again.status_code == 200 and again.json()["seq"] == cancelled["seq"]

        # Submitted: its transaction may still land, so it is not cancelled, and confirms.
        faults.latency((0, 0), (1500, 1500))
        market_order = await submit(client, type="market", input_mint="SOL",
                                    output_mint="USDC", amount="0.1")
        await wait_status(client, market_order["order_id"], "submitted")
        refused = await client.post(f"/api/orders/{market_order['order_id']}/cancel")
        assert refused.status_code == 409, refused.text
        assert "may still land" in refused.json()["error"]
        done = await wait_terminal(client, market_order["order_id"])
        assert done["status"] == "confirmed"
        finished = await client.post(f"/api/orders/{market_order['order_id']}/cancel")
        assert finished.status_code == 409
        assert "already confirmed" in finished.json()["error"]

        missing = await client.post("/api/orders/00000000-0000-0000-0000-000000000000/cancel")
        assert missing.status_code == 404

    # Over the WebSocket: the cancel op answers the cancelled order, and a subscriber of
    # the order sees the event.
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        other = await submit(client, type="stop", input_mint="SOL", output_mint="USDC",
                             amount="0.1", trigger_price=price_text(now / 2))
        await wait_status(client, other["order_id"], "open")
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "order_ids": [other["order_id"]]}))
        state = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert state["type"] == "state" and state["order"]["status"] == "open"
        await ws.send(json.dumps({"op": "cancel", "order_id": other["order_id"]}))
        frames = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]
    by_type = {f["type"]: f for f in frames}
    assert by_type["cancelled"]["order"]["status"] == "cancelled"
    assert by_type["order"]["status"] == "cancelled"
    assert swaps_of(db, other["order_id"]) == 0


async def test_cancels_racing_triggers_end_in_exactly_one_outcome_each(
    engine: Engine, api: str, market: Market, db: psycopg.Connection[Any]
) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        ids = [o["order_id"] for o in await rest_limits(client, "RAY", "USDC", "5", "1.02", 16)]

        async def cancel(order_id: str, delay_s: float) -> int:
            await asyncio.sleep(delay_s)
            return (await client.post(f"/api/orders/{order_id}/cancel")).status_code

        # The watcher quotes the pair every 0.5 s: cancels spread over 0.8 s after the move
        # meet the order open, routing, and signed.
        market.move("RAY", "USDC", 500)
        answers = await asyncio.gather(*(cancel(i, 0.05 * k) for k, i in enumerate(ids)))
        done = [await wait_terminal(client, i) for i in ids]

    assert set(answers) <= {200, 409}
    for answer, order in zip(answers, done, strict=True):
        seqs = [e["seq"] for e in order["events"]]
        assert seqs == list(range(1, len(seqs) + 1))
        ends = [e["status"] for e in order["events"] if e["status"] in TERMINAL]
        assert ends == [order["status"]]
        if answer == 200:
            assert order["status"] == "cancelled"
            assert swaps_of(db, order["order_id"]) == 0
        else:
            assert order["status"] == "confirmed", order["failure_reason"]
            assert swaps_of(db, order["order_id"]) == 1


async def test_resting_orders_survive_an_order_manager_kill_and_trigger_once(
    engine: Engine, api: str, market: Market, db: psycopg.Connection[Any]
) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        orders = await rest_limits(client, "RAY", "USDC", "3", "1.03", 5)
        ray.kill(ray.get_actor(MANAGER, namespace=engine.settings.namespace), no_restart=False)
        await asyncio.sleep(1.0)
        market.move("RAY", "USDC", 600)
        done = [await wait_terminal(client, o["order_id"], timeout_s=60) for o in orders]
    for order in done:
        assert order["status"] == "confirmed", order["failure_reason"]
        assert statuses(order).count("routing") == 1, statuses(order)
        assert swaps_of(db, order["order_id"]) == 1


async def test_an_invalid_limit_order_is_refused_over_http_and_stores_nothing(
    api: str, db: psycopg.Connection[Any]
) -> None:
    # Every rule is unit-tested in tests/unit/serve/test_models.py; this is the route.
    before = db.execute("SELECT count(*) FROM orders").fetchone()
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        response = await client.post("/api/orders", json={
            "type": "limit", "input_mint": "SOL", "output_mint": "USDC", "amount": "1",
            "time_in_force": "gtt", "limit_price": "1"})
    assert response.status_code == 422, response.text
    assert response.json() == {"error": "time_in_force gtt needs expires_at"}
    assert db.execute("SELECT count(*) FROM orders").fetchone() == before
