"""Only a key's account can see or trade its orders; a read key cannot trade (issue 12)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
import websockets

from core.accounts import Scope
from dexec.launch import Engine
from storage.database import Database
from storage.keys import KeyStore
from tests.integration.client import order_body, order_count


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def keys(engine: Engine) -> AsyncIterator[KeyStore]:
    assert engine.settings.database_url is not None
    db = Database(engine.settings.database_url.get_secret_value(), min_size=1, max_size=1)
    await db.open()
    yield KeyStore(db)
    await db.close()


async def new_key(keys: KeyStore, account: str, scope: Scope = Scope.TRADE) -> str:
    return (await keys.create(account, scope)).token


async def test_without_a_valid_key_nothing_is_read_or_stored(
    engine: Engine, keys: KeyStore, db: psycopg.Connection[Any]
) -> None:
    revoked = await new_key(keys, "revoked-acct")
    assert await keys.revoke(revoked.split("_")[1])
    before = order_count(db)
    async with httpx.AsyncClient(base_url=engine.api_url) as client:
        none = await client.post("/api/orders", json=order_body())
        bad = await client.post("/api/orders", json=order_body(), headers=bearer("dxk_nope"))
        gone = await client.get("/api/orders", headers=bearer(revoked))
        health = await client.get("/healthz")
    assert none.status_code == 401 and none.headers["www-authenticate"].startswith("Bearer")
    assert "API key is required" in none.json()["error"]
    assert bad.status_code == 401 and gone.status_code == 401
    assert health.status_code == 200  # probes need no key
    assert order_count(db) == before


async def test_an_account_cannot_see_another_account_s_orders(
    engine: Engine, keys: KeyStore
) -> None:
    alice, bob = await new_key(keys, "alice"), await new_key(keys, "bob")
    shared_id = f"same-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=engine.api_url) as client:
        mine = await client.post("/api/orders", json=order_body(client_order_id=shared_id),
                                 headers=bearer(alice))
        theirs = await client.post("/api/orders", json=order_body(client_order_id=shared_id),
                                   headers=bearer(bob))
        order_id = mine.json()["order_id"]
        peek = await client.get(f"/api/orders/{order_id}", headers=bearer(bob))
        listed = await client.get("/api/orders", headers=bearer(bob))
        own = await client.get(f"/api/orders/{order_id}", headers=bearer(alice))
    # client_order_id is per account: the same id makes two orders, one each.
    assert mine.status_code == 202 and theirs.status_code == 202
    assert theirs.json()["order_id"] != order_id and mine.json()["account_id"] == "alice"
    assert peek.status_code == 404 and peek.json() == {"error": f"order {order_id} not found"}
    assert order_id not in {o["order_id"] for o in listed.json()["orders"]}
    assert {o["account_id"] for o in listed.json()["orders"]} == {"bob"}
    assert own.status_code == 200

    ws = engine.api_url.replace("http://", "ws://") + "/ws"
    async with websockets.connect(ws, additional_headers=bearer(bob)) as conn:
        for since in (None, 0):  # live, and a replay of the history
            frame: dict[str, Any] = {"op": "subscribe", "order_ids": [order_id]}
            if since is not None:
                frame["since_seq"] = since
            await conn.send(json.dumps(frame))
            reply = json.loads(await asyncio.wait_for(conn.recv(), 10))
            assert reply["type"] == "error" and reply["status"] == 404, reply


async def test_a_read_key_reads_its_account_but_cannot_trade(
    engine: Engine, keys: KeyStore
) -> None:
    trade, read = await new_key(keys, "carol"), await new_key(keys, "carol", Scope.READ)
    async with httpx.AsyncClient(base_url=engine.api_url) as client:
        placed = await client.post("/api/orders", json=order_body(), headers=bearer(trade))
        refused = await client.post("/api/orders", json=order_body(), headers=bearer(read))
        seen = await client.get(f"/api/orders/{placed.json()['order_id']}", headers=bearer(read))
    assert placed.status_code == 202 and seen.status_code == 200
    assert refused.status_code == 403 and "read-only" in refused.json()["error"]

    ws = engine.api_url.replace("http://", "ws://") + "/ws"
    async with websockets.connect(ws) as conn:
        await conn.send(json.dumps({"op": "submit", "order": order_body()}))
        first = json.loads(await asyncio.wait_for(conn.recv(), 10))
        await conn.send(json.dumps({"op": "auth", "key": read}))  # browsers cannot set headers
        authed = json.loads(await asyncio.wait_for(conn.recv(), 10))
        await conn.send(json.dumps({"op": "submit", "order": order_body()}))
        submit = json.loads(await asyncio.wait_for(conn.recv(), 10))
    assert first["type"] == "error" and first["status"] == 401
    assert authed == {"type": "authenticated", "account_id": "carol", "scope": "read"}
    assert submit["type"] == "error" and submit["status"] == 403


async def test_an_account_s_connections_are_bounded(engine: Engine, keys: KeyStore) -> None:
    key = await new_key(keys, "dave")
    ws = engine.api_url.replace("http://", "ws://") + "/ws"
    limit = engine.settings.ws_max_connections_per_account
    opened = [await websockets.connect(ws, additional_headers=bearer(key))
              for _ in range(limit)]
    try:
        for conn in opened:  # each counts once it is used: nothing to answer yet
            await conn.send(json.dumps({"op": "unsubscribe", "order_ids": ["x"]}))
            assert json.loads(await asyncio.wait_for(conn.recv(), 10))["type"] == "unsubscribed"
        async with websockets.connect(ws, additional_headers=bearer(key)) as extra:
            refused = json.loads(await asyncio.wait_for(extra.recv(), 10))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(extra.recv(), 10)
        assert refused["status"] == 429 and "connections" in refused["error"]
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    finally:
        for conn in opened:
            await conn.close()


async def test_a_connection_that_follows_nothing_and_says_nothing_is_closed(
    engine: Engine, ws_url: str, api: str, faults: Any
) -> None:
    idle_s = engine.settings.ws_idle_timeout_s
    # The followed order must stay open past the idle timeout: a terminal order is not
    # followed (at zero latency it can finish before the follower has subscribed).
    landing_ms = int((idle_s + 5) * 1000)
    faults.latency((0, 0), (landing_ms, landing_ms))
    async with httpx.AsyncClient(base_url=api) as client:
        order_id = (await client.post("/api/orders", json=order_body())).json()["order_id"]
    async with websockets.connect(ws_url) as silent, websockets.connect(ws_url) as follower:
        await follower.send(json.dumps({"op": "subscribe", "order_ids": [order_id],
                                        "since_seq": 0}))
        await asyncio.sleep(idle_s + 1.5)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(silent.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        # A connection that follows an order is not idle, however quiet.
        await follower.send(json.dumps({"op": "unsubscribe", "order_ids": [order_id]}))
        kinds = []
        while "unsubscribed" not in kinds and len(kinds) < 20:  # its events, then the answer
            kinds.append(json.loads(await asyncio.wait_for(follower.recv(), 5))["type"])
        assert kinds[-1] == "unsubscribed"


async def test_one_account_at_its_open_order_bound_does_not_stop_another(
    engine: Engine, keys: KeyStore, db: psycopg.Connection[Any], faults: Any
) -> None:
    carol, dave = await new_key(keys, "carol"), await new_key(keys, "dave")
    faults.latency((0, 0), (1500, 1500))  # orders stay open while the test submits
    faults.limits(max_open_orders=0, per_minute=0, account_open_orders=3)
    before = order_count(db)
    async with httpx.AsyncClient(base_url=engine.api_url, timeout=30) as client:
        carols = [await client.post("/api/orders", json=order_body(amount="0.01"),
                                    headers=bearer(carol)) for _ in range(5)]
        daves = await client.post("/api/orders", json=order_body(amount="0.01"),
                                  headers=bearer(dave))
    assert [r.status_code for r in carols] == [202, 202, 202, 429, 429]
    assert "'carol' has 3 open orders" in carols[3].json()["error"]
    assert int(carols[3].headers["Retry-After"]) >= 1
    assert daves.status_code == 202  # another account is not affected
    assert order_count(db) == before + 4  # a refused order left nothing behind
