"""The engine end to end, driven over HTTP and WebSocket the way a client drives it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import psycopg
import pytest
import websockets

from dexec.launch import Engine
from tests.integration.client import (
    TERMINAL,
    executed_swaps,
    order_body,
    order_count,
    wait_terminal,
    ws_submit,
)

HAPPY_PATH = ["pending", "routing", "building", "submitted", "confirmed"]


def db_events(db: psycopg.Connection[Any], order_id: str) -> list[tuple[int, str, int]]:
    rows = db.execute(
        "SELECT seq, status, attempt FROM order_events WHERE order_id = %s ORDER BY seq",
        (order_id,),
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


async def test_ws_order_confirms_with_full_event_sequence_and_matching_rows(
    engine: Engine, ws_url: str, db: psycopg.Connection[Any]
) -> None:
    accepted, events = await ws_submit(ws_url, order_body(amount="2.25"))

    assert [e["status"] for e in events] == HAPPY_PATH
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    building, submitted, confirmed = events[2], events[3], events[4]
    assert {q["venue"] for q in building["quotes"]} == {"raydium", "meteora"}
    best = max(building["quotes"], key=lambda q: int(q["amount_out"]))
    assert building["venue"] == best["venue"]
    assert submitted["signature"] == confirmed["signature"]
    assert int(confirmed["amount_out"]) >= int(best["amount_out"]) * 9950 // 10000
    assert confirmed["price"]

    order_id = accepted["order_id"]
    assert db_events(db, order_id) == [(e["seq"], e["status"], e["attempt"]) for e in events]
    row = db.execute(
        "SELECT status, venue, signature, amount_out, amount_in FROM orders WHERE order_id = %s",
        (order_id,),
    ).fetchone()
    assert row is not None
    assert row[0] == "confirmed" and row[1] == building["venue"]
    assert row[2] == confirmed["signature"] and int(row[3]) == int(confirmed["amount_out"])
    assert int(row[4]) == 2_250_000_000
    quotes = db.execute(
        "SELECT venue, chosen FROM order_quotes WHERE order_id = %s", (order_id,)
    ).fetchall()
    assert sorted(quotes) == sorted([("raydium", building["venue"] == "raydium"),
                                     ("meteora", building["venue"] == "meteora")])
    swaps = db.execute(
        "SELECT signature, status FROM swap_transactions WHERE order_id = %s", (order_id,)
    ).fetchall()
    assert swaps == [(confirmed["signature"], "confirmed")]
    assert executed_swaps(engine, [confirmed["signature"]]) == 1


async def test_rest_order_exposes_quotes_events_and_execution(api: str) -> None:
    async with httpx.AsyncClient(base_url=api) as client:
        response = await client.post("/api/orders", json=order_body(
            input_mint="USDC", output_mint="So11111111111111111111111111111111111111112",
            amount=150, slippage_bps=100))
        assert response.status_code == 202, response.text
        created = response.json()
        assert created["status"] == "pending"
        assert [e["seq"] for e in created["events"]] == [1]
        order = await wait_terminal(client, created["order_id"])

    assert order["status"] == "confirmed"
    assert order["input_token"] == "USDC" and order["output_token"] == "SOL"
    assert order["amount"] == "150" and order["amount_in_base"] == "150000000"
    assert order["venue"] in ("raydium", "meteora")
    assert len(order["quotes"]) == 2
    assert order["signature"] and order["attempts"] == 1
    assert order["failure_reason"] is None
    # 150 USDC buys about one SOL at ~150 USDC/SOL (venues differ by a few percent).
    assert 0.9 < float(order["amount_out"]) < 1.1
    assert [e["status"] for e in order["events"]] == HAPPY_PATH


async def test_venue_down_routes_to_the_other(api: str, faults: Any) -> None:
    faults.venue("meteora", down=True)
    async with httpx.AsyncClient(base_url=api) as client:
        response = await client.post("/api/orders", json=order_body())
        order = await wait_terminal(client, response.json()["order_id"])
    assert order["status"] == "confirmed"
    assert order["venue"] == "raydium"
    assert [q["venue"] for q in order["quotes"]] == ["raydium"]


async def test_transient_errors_are_retried_then_confirmed(api: str, faults: Any) -> None:
    faults.venue("raydium", fail_next=1)
    faults.venue("meteora", fail_next=1)
    async with httpx.AsyncClient(base_url=api) as client:
        response = await client.post("/api/orders", json=order_body())
        order = await wait_terminal(client, response.json()["order_id"])
    assert order["status"] == "confirmed"
    assert order["attempts"] == 2
    statuses = [(e["status"], e["attempt"]) for e in order["events"]]
    assert statuses == [("pending", 0), ("routing", 1), ("routing", 2), ("building", 2),
                        ("submitted", 2), ("confirmed", 2)]
    retry = order["events"][2]
    assert retry["error_class"] == "retryable"
    # The reason a client reads is the venues' own messages, not a remote traceback.
    assert retry["error"] == (
        "no venue answered with a quote (raydium: raydium answered 503 (injected);"
        " meteora: meteora answered 503 (injected))"
    )


async def test_retries_stop_after_three_attempts(api: str, faults: Any) -> None:
    faults.venue("raydium", down=True)
    faults.venue("meteora", down=True)
    async with httpx.AsyncClient(base_url=api) as client:
        response = await client.post("/api/orders", json=order_body())
        order = await wait_terminal(client, response.json()["order_id"])
    assert order["status"] == "failed"
    assert order["attempts"] == 3
    assert "no venue answered" in order["failure_reason"]
    assert [e["status"] for e in order["events"]] == [
        "pending", "routing", "routing", "routing", "failed"]


async def test_slippage_fails_with_reason_and_never_fills(
    engine: Engine, api: str, faults: Any, db: psycopg.Connection[Any]
) -> None:
    faults.adverse_move(100)  # a front-runner moves every pool 1% before each swap lands
    async with httpx.AsyncClient(base_url=api) as client:
        response = await client.post("/api/orders", json=order_body(slippage_bps=10))
        order = await wait_terminal(client, response.json()["order_id"])
    assert order["status"] == "failed"
    assert order["failure_reason"].startswith("slippage exceeded")
    assert order["attempts"] == 1, "slippage is terminal: no blind retry"
    assert order["events"][-1]["error_class"] == "terminal"
    assert order["amount_out"] is None
    signatures = [r[0] for r in db.execute(
        "SELECT signature FROM swap_transactions WHERE order_id = %s", (order["order_id"],))]
    assert len(signatures) == 1
    assert executed_swaps(engine, signatures) == 0


async def test_fifty_concurrent_orders_all_terminal_gapless_and_consistent(
    engine: Engine, api: str, ws_url: str, db: psycopg.Connection[Any]
) -> None:
    pairs = [("SOL", "USDC", "0.5"), ("USDC", "USDT", "250"), ("RAY", "SOL", "40"),
             ("SOL", "USDT", "1"), ("RAY", "USDC", "75")]
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        async def rest(i: int) -> tuple[str, list[dict[str, Any]] | None]:
            a, b, amount = pairs[i % len(pairs)]
            r = await client.post("/api/orders", json=order_body(
                input_mint=a, output_mint=b, amount=amount, client_order_id=f"c50-{i}"))
            assert r.status_code == 202, r.text
            return r.json()["order_id"], None

        async def ws(i: int) -> tuple[str, list[dict[str, Any]] | None]:
            a, b, amount = pairs[i % len(pairs)]
            order, events = await ws_submit(ws_url, order_body(
                input_mint=a, output_mint=b, amount=amount, client_order_id=f"c50-{i}"))
            return order["order_id"], events

        results = await asyncio.gather(*(rest(i) if i % 2 else ws(i) for i in range(50)))
        orders = [await wait_terminal(client, order_id) for order_id, _ in results]

    assert len({o["order_id"] for o in orders}) == 50
    streamed = {oid: events for oid, events in results if events is not None}
    signatures = []
    for order in orders:
        assert order["status"] in TERMINAL
        seqs = [e["seq"] for e in order["events"]]
        assert seqs == list(range(1, len(seqs) + 1)), f"gap in {order['order_id']}: {seqs}"
        assert order["events"][-1]["status"] == order["status"]
        assert db_events(db, order["order_id"]) == [
            (e["seq"], e["status"], e["attempt"]) for e in order["events"]]
        if order["order_id"] in streamed:
            assert streamed[order["order_id"]] == order["events"]
        if order["status"] == "confirmed":
            signatures.append(order["signature"])
    assert len(signatures) == len(set(signatures))
    assert executed_swaps(engine, signatures) == len(signatures)
    assert len(signatures) == 50, [o["failure_reason"] for o in orders if o["failure_reason"]]


async def test_idempotent_submission_returns_the_original_order(api: str) -> None:
    body = order_body(client_order_id="idem-1")
    async with httpx.AsyncClient(base_url=api) as client:
        first = await client.post("/api/orders", json=body)
        second = await client.post("/api/orders", json=body)
        conflict = await client.post("/api/orders", json={**body, "amount": "3"})
    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json()["order_id"] == first.json()["order_id"]
    assert conflict.status_code == 409
    assert "idem-1" in conflict.json()["error"]


async def test_subscribe_streams_current_state_then_live_events(api: str, ws_url: str) -> None:
    async with httpx.AsyncClient(base_url=api) as client:
        created = (await client.post("/api/orders", json=order_body())).json()
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "order_ids": [created["order_id"]]}))
        state = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert state["type"] == "state"
        events = list(state["order"]["events"])
        while events[-1]["status"] not in TERMINAL:
            events.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["status"] == "confirmed"


async def test_list_orders_pages_newest_first_and_filters(api: str) -> None:
    async with httpx.AsyncClient(base_url=api) as client:
        ids = [(await client.post("/api/orders", json=order_body(amount="0.01"))).json()
               ["order_id"] for _ in range(3)]
        for order_id in ids:
            await wait_terminal(client, order_id)
        page = (await client.get("/api/orders", params={"limit": 2})).json()
        assert [o["order_id"] for o in page["orders"]] == ids[::-1][:2]
        assert page["next_cursor"]
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 7}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/api/orders", params=params)).json()
            seen += [o["order_id"] for o in page["orders"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen))
        assert seen[:3] == ids[::-1]
        failed = (await client.get("/api/orders", params={"status": "failed"})).json()
        assert all(o["status"] == "failed" for o in failed["orders"])


async def test_quotes_endpoint_quotes_every_venue_and_executes_nothing(
    api: str, db: psycopg.Connection[Any]
) -> None:
    before = order_count(db)
    async with httpx.AsyncClient(base_url=api) as client:
        response = await client.get("/api/quotes", params={
            "input_mint": "SOL", "output_mint": "USDC", "amount": "10"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert {q["venue"] for q in body["quotes"]} == {"raydium", "meteora"}
    assert body["best"]["amount_out"] == max(q["amount_out"] for q in body["quotes"]
                                             ) or body["best"]["venue"]
    assert int(body["best"]["amount_out"]) == max(int(q["amount_out"]) for q in body["quotes"])
    assert order_count(db) == before


async def test_tokens_health_and_docs(api: str) -> None:
    async with httpx.AsyncClient(base_url=api) as client:
        tokens = (await client.get("/api/tokens")).json()["tokens"]
        assert {t["symbol"] for t in tokens} >= {"SOL", "USDC", "USDT", "RAY"}
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/docs")).status_code == 200
        spec = (await client.get("/openapi.json")).json()
        assert "/api/orders" in spec["paths"] and "/api/quotes" in spec["paths"]


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("missing fields", {"type": "market"}, "input_mint: field required"),
    ("missing amount", {k: v for k, v in order_body().items() if k != "amount"},
     "amount: field required"),
    ("zero amount", order_body(amount="0"), "greater than zero"),
    ("negative amount", order_body(amount=-1), "greater than zero"),
    ("non-numeric amount", order_body(amount="lots"), "not a number"),
    ("too many decimals", order_body(input_mint="USDC", output_mint="SOL", amount="1.0000001"),
     "more than 6 decimals"),
    ("same token", order_body(output_mint="SOL"), "must differ"),
    ("unknown token", order_body(output_mint="DOGE"), "unknown token"),
    ("amount past u64", order_body(amount="1e30"), "too large"),
    ("amount overflowing", order_body(amount="1e999999"), "too large"),
    ("unknown mint", order_body(output_mint="7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU"),
     "unknown token mint"),
    ("unknown order type", order_body(type="twap"), "type:"),
    ("amount as list", order_body(amount=[1]), "amount:"),
    ("slippage as string", order_body(slippage_bps="50"), "slippage_bps:"),
    ("slippage as bool", order_body(slippage_bps=True), "slippage_bps:"),
    ("slippage too big", order_body(slippage_bps=9000), "slippage_bps:"),
    ("extra field", order_body(price="1"), "price: unknown field"),
    ("body not an object", [order_body()], "JSON object"),
]


@pytest.mark.parametrize(("case", "body", "message"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
async def test_bad_orders_are_rejected_and_nothing_persisted(
    api: str, db: psycopg.Connection[Any], case: str, body: Any, message: str
) -> None:
    before = order_count(db)
    async with httpx.AsyncClient(base_url=api) as client:
        response = await client.post("/api/orders", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert message in response.json()["error"], response.json()
    assert order_count(db) == before


async def test_a_body_without_a_json_content_type_is_refused(
    api: str, db: psycopg.Connection[Any]
) -> None:
    before = order_count(db)
    async with httpx.AsyncClient(base_url=api) as client:
        response = await client.post("/api/orders", content=json.dumps(order_body()))
    assert response.status_code == 422, response.text
    assert "Content-Type: application/json" in response.json()["error"]
    assert order_count(db) == before


async def test_malformed_json_and_oversized_bodies(api: str, db: psycopg.Connection[Any]) -> None:
    before = order_count(db)
    async with httpx.AsyncClient(base_url=api) as client:
        broken = await client.post("/api/orders", content=b"{not json",
                                   headers={"content-type": "application/json"})
        huge = await client.post("/api/orders", json=order_body(client_order_id="x" * 70_000))

        async def chunks() -> Any:
            for _ in range(80):
                yield b" " * 1024

        streamed = await client.post("/api/orders", content=chunks())
        not_utf8 = await client.post("/api/orders", content=b'{"amount": "\xff"}',
                                     headers={"content-type": "application/json"})
        # A JSON API refuses other declared types (a form or text/plain from a web page).
        as_text = await client.post("/api/orders", content=json.dumps(order_body()),
                                    headers={"content-type": "text/plain"})
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["error"]
    assert not_utf8.status_code == 422 and "not valid JSON" in not_utf8.json()["error"]
    assert as_text.status_code == 422 and "JSON object" in as_text.json()["error"]
    assert huge.status_code == 413 and "larger than" in huge.json()["error"]
    assert streamed.status_code == 413
    assert order_count(db) == before


async def test_unknown_order_id_is_404(api: str) -> None:
    async with httpx.AsyncClient(base_url=api) as client:
        missing = await client.get("/api/orders/00000000-0000-4000-8000-000000000000")
        garbage = await client.get("/api/orders/not-an-id")
        bad_cursor = await client.get("/api/orders", params={"cursor": "zzz"})
        bad_limit = await client.get("/api/orders", params={"limit": 0})
        bad_status = await client.get("/api/orders", params={"status": "lost"})
    assert missing.status_code == 404 and "not found" in missing.json()["error"]
    assert garbage.status_code == 404
    assert bad_cursor.status_code == 422 and "cursor" in bad_cursor.json()["error"]
    assert bad_limit.status_code == 422 and "limit" in bad_limit.json()["error"]
    assert bad_status.status_code == 422 and "status" in bad_status.json()["error"]


async def test_malformed_ws_frames_get_error_frames_and_the_connection_stays_open(
    ws_url: str, db: psycopg.Connection[Any]
) -> None:
    before = order_count(db)
    frames = [
        "not json",
        "[1, 2]",
        json.dumps({"op": "dance"}),
        json.dumps({"op": "submit"}),
        json.dumps({"op": "submit", "order": order_body(amount="-3")}),
        json.dumps({"op": "subscribe", "order_ids": "abc"}),
        json.dumps({"op": "subscribe", "order_ids": ["x"], "since_seq": -1}),
        json.dumps({"op": "submit", "order": order_body(client_order_id="y" * 70_000)}),
    ]
    async with websockets.connect(ws_url, max_size=2**22) as ws:
        for frame in frames:
            await ws.send(frame)
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert reply["type"] == "error", (frame[:40], reply)
            assert reply["error"]
        await ws.send(json.dumps({"op": "subscribe",
                                  "order_ids": ["00000000-0000-4000-8000-000000000000"]}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["type"] == "error" and "not found" in reply["error"]
    assert order_count(db) == before


async def test_quotes_go_as_one_plain_call_until_a_venue_takes_time(
    engine: Engine, faults: Any
) -> None:
    """Zero-latency venues are asked with a plain call (half the CPU of a streamed one);
    the first batch that meets a venue with latency turns the client over to streaming,
    where a slow venue holds back no other."""
    import ray

    from actors.shell import CHAIN
    from actors.simulated_chain import RayChainClient

    chain = ray.get_actor(CHAIN, namespace=engine.settings.namespace)
    request = ("raydium", "SOL", "USDC", 10**9)
    [answer] = await chain.quote_at_once.remote([request])
    assert answer.amount_out > 0
    client = RayChainClient(chain, window_s=0.0)
    assert (await client.quote(*request)).amount_out > 0

    faults.latency((50, 50), (0, 0))
    assert await chain.quote_at_once.remote([request]) is None
    quote = await client.quote(*request)  # streamed, after the plain call declined

    assert quote.amount_out > 0
    assert client._at_once is False  # the switch is the behaviour under test
