"""Issue 12's findings against a running engine: one bad request fails nothing else, each
bad input is a 4xx naming its field with nothing stored, and no frame drops a connection."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import psycopg
import websockets

from core.errors import DexecError, InvalidInput
from core.orders import Change, NewOrder, OrderType, Trigger
from core.quotes import SignedSwap
from core.tokens import TokenRegistry
from dexec.launch import Engine
from storage.repository import OrderRepository
from storage.writes import ApplyChange
from tests.integration.client import order_body, order_count

SOL, USDC = TokenRegistry().resolve("SOL").mint, TokenRegistry().resolve("USDC").mint


async def test_an_amount_that_rounds_to_zero_fails_only_its_own_request(
    api: str, db: psycopg.Connection[Any]
) -> None:
    before = order_count(db)
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        bad = client.post("/api/orders", json=order_body(amount="1e-1000079"))
        goods = [client.post("/api/orders", json=order_body(amount="0.01")) for _ in range(20)]
        answers = await asyncio.gather(bad, *goods)
    assert answers[0].status_code == 422, answers[0].text
    assert answers[0].json()["error"].startswith("amount:")
    assert [a.status_code for a in answers[1:]] == [202] * 20
    assert order_count(db) == before + 20


async def test_too_many_significant_digits_and_deep_nesting_are_4xx_with_nothing_stored(
    api: str, db: psycopg.Connection[Any]
) -> None:
    before = order_count(db)
    nested = '{"type": "market", "x": ' + "[" * 25_000 + "]" * 25_000 + "}"
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        digits = await client.post("/api/orders", json=order_body(
            input_mint="USDC", output_mint="SOL", amount="1." + "0" * 80 + "1"))
        deep = await client.post("/api/orders", content=nested,
                                 headers={"content-type": "application/json"})
    assert digits.status_code == 422 and "more than 6 decimals" in digits.json()["error"]
    assert deep.status_code == 422 and "not valid JSON" in deep.json()["error"]
    assert order_count(db) == before


async def test_unknown_routes_and_methods_answer_in_the_api_error_shape(api: str) -> None:
    async with httpx.AsyncClient(base_url=api) as client:
        missing = await client.get("/api/nothing-here")
        wrong = await client.delete("/api/orders")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    assert wrong.status_code == 405 and set(wrong.json()) == {"error"}


async def test_a_bad_item_in_a_stored_batch_is_its_own_answer(engine: Engine) -> None:
    """Structurally: a value the database refuses fails its own item, not the batch."""
    assert engine.settings.database_url is not None
    repo = OrderRepository(engine.settings.database_url.get_secret_value())
    await repo.open()
    try:
        good = NewOrder("default", None, OrderType.MARKET, SOL, USDC, 1_000_000, 50)
        unvalidated = NewOrder("default", None, OrderType.MARKET, SOL, USDC, 0, 50)
        answers = await repo.create_orders([good, unvalidated, good])
        assert isinstance(answers[1], InvalidInput)
        assert "out of range" in answers[1].message  # and nothing of the server's text
        created = [a for a in answers if not isinstance(a, DexecError)]
        assert len(created) == 2 and all(new for _, new in created)

        (one, _), (other, _) = created
        fine = SignedSwap("raydium", f"ok-{uuid.uuid4()}", b"tx", 10, 1)
        past_bigint = SignedSwap("raydium", f"bad-{uuid.uuid4()}", b"tx", 2**70, 1)
        start = Change(Trigger.START_ROUTING, attempt=1)
        written = await repo.write_batch([ApplyChange(one.order_id, start, None, one, fine),
                                          ApplyChange(other.order_id, start, None, other,
                                                      past_bigint)])
        assert not isinstance(written[0], DexecError) and isinstance(written[1], InvalidInput)
        assert [s.signature for s, _, _ in await repo.swaps_for_order(one.order_id)] == [
            fine.signature]
        refused = await repo.get_order(other.order_id)  # nothing of the bad item was written
        assert refused is not None and refused.status == "pending"
        assert await repo.swaps_for_order(other.order_id) == []
    finally:
        await repo.close()


async def test_frames_that_broke_connections_get_error_frames_instead(ws_url: str) -> None:
    async with websockets.connect(ws_url, max_size=2**22) as ws:
        await ws.send(b'{"op": "subscribe"}')  # a binary frame closed the connection (1006)
        binary = json.loads(await asyncio.wait_for(ws.recv(), 10))
        await ws.send('{"op": ' + "[" * 25_000 + "]" * 25_000 + "}")  # RecursionError
        deep = json.loads(await asyncio.wait_for(ws.recv(), 10))
        # 16,000 ids in one frame answered 16,000 frames (x20 amplification): one error now.
        many_ids = json.dumps({"op": "subscribe", "order_ids": ["x"] * 16_000},
                              separators=(",", ":"))
        assert len(many_ids) < 64 * 1024  # within the frame limit, as in the finding
        await ws.send(many_ids)
        many = json.loads(await asyncio.wait_for(ws.recv(), 10))
        await ws.send(json.dumps({"op": "subscribe", "order_ids": [str(uuid.uuid4())]}))
        still_open = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert binary["type"] == "error" and "text" in binary["error"]
    assert deep["type"] == "error" and "not valid JSON" in deep["error"]
    assert many["type"] == "error" and "at most 100" in many["error"]
    assert still_open["type"] == "error" and "not found" in still_open["error"]
