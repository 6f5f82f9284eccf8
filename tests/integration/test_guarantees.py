"""Nothing accepted is lost or executed twice: each promise, proven by killing things for real."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from typing import Any

import httpx
import psutil
import psycopg
import pytest
import ray
import websockets

from actors.shell import MANAGER
from actors.worker_fleet import worker_name
from dexec.launch import Engine
from tests.integration.client import (
    TERMINAL,
    WITHIN_FRONT,
    executed_swaps,
    order_body,
    wait_terminal,
)


def swaps_of(db: psycopg.Connection[Any], order_id: str) -> list[str]:
    return [r[0] for r in db.execute(
        "SELECT signature FROM swap_transactions WHERE order_id = %s", (order_id,))]


def db_sequence(db: psycopg.Connection[Any], order_id: str) -> list[tuple[int, str]]:
    return [(r[0], r[1]) for r in db.execute(
        "SELECT seq, status FROM order_events WHERE order_id = %s ORDER BY seq", (order_id,))]


def assert_exactly_once(engine: Engine, db: psycopg.Connection[Any], order: dict[str, Any]
                        ) -> None:
    """A confirmed order executed exactly one swap on chain; a failed one none."""
    executed = executed_swaps(engine, swaps_of(db, order["order_id"]))
    assert executed == (1 if order["status"] == "confirmed" else 0), order
    seqs = [e["seq"] for e in order["events"]]
    assert seqs == list(range(1, len(seqs) + 1)), seqs


def replica_pids() -> list[int]:
    """Return the pids of the ingress replicas (Ray names their processes after them)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "ServeReplica:dexec:DexecIngress" in cmdline:
            found.append(proc.info["pid"])
    return found


async def wait_healthy(api: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=api, timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get("/api/tokens")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("the API did not come back")


async def test_acknowledged_order_is_stored_even_if_the_ingress_dies_at_once(
    engine: Engine, api: str, db: psycopg.Connection[Any], faults: Any
) -> None:
    faults.latency((0, 0), (300, 300))
    [pid] = replica_pids()
    async with httpx.AsyncClient(base_url=api) as client:
        response = await client.post("/api/orders", json=order_body())
        os.kill(pid, signal.SIGKILL)  # right after the ack
    assert response.status_code == 202
    order_id = response.json()["order_id"]
    assert db_sequence(db, order_id)[0] == (1, "pending")
    await wait_healthy(api)
    async with httpx.AsyncClient(base_url=api) as client:
        order = await wait_terminal(client, order_id)
    assert order["status"] == "confirmed"
    assert_exactly_once(engine, db, order)


async def test_twenty_concurrent_identical_submissions_make_one_order_and_one_swap(
    engine: Engine, api: str, db: psycopg.Connection[Any]
) -> None:
    body = order_body(client_order_id="same-twenty")
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        responses = await asyncio.gather(*(client.post("/api/orders", json=body)
                                           for _ in range(20)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] * 19 + [202], codes
        assert len({r.json()["order_id"] for r in responses}) == 1
        order = await wait_terminal(client, responses[0].json()["order_id"])
    row = db.execute("SELECT count(*) FROM orders WHERE client_order_id = 'same-twenty'"
                     ).fetchone()
    assert row is not None and row[0] == 1
    assert len(swaps_of(db, order["order_id"])) == 1
    assert_exactly_once(engine, db, order)


@pytest.mark.parametrize("point", ["routing", "signed", "sent"])
async def test_worker_killed_mid_order_resumes_by_signature_exactly_once(
    engine: Engine, api: str, db: psycopg.Connection[Any], point: str
) -> None:
    ns = engine.settings.namespace
    workers = [ray.get_actor(worker_name(i), namespace=ns) for i in range(engine.settings.workers)]
    pids_before = ray.get([w.pid.remote() for w in workers])
    ray.get([w.arm_crash.remote(point) for w in workers])
    try:
        async with httpx.AsyncClient(base_url=api) as client:
            response = await client.post("/api/orders", json=order_body(amount="0.75"))
            order = await wait_terminal(client, response.json()["order_id"], timeout_s=90)
    finally:
        for w in workers:
            # A worker that is still restarting comes back disarmed anyway.
            with contextlib.suppress(ray.exceptions.RayError):
                ray.get(w.arm_crash.remote(None), timeout=30)
    pids_after = ray.get([w.pid.remote() for w in workers])
    assert pids_after != pids_before, "no worker was killed"
    assert order["status"] == "confirmed", order
    assert_exactly_once(engine, db, order)
    if point != "routing":
        # The signature recorded before the kill decided the outcome: nothing was re-signed.
        assert len(swaps_of(db, order["order_id"])) == 1


async def test_order_manager_killed_with_200_in_flight_loses_nothing(
    engine: Engine, api: str, db: psycopg.Connection[Any], faults: Any
) -> None:
    faults.latency((0, 20), (200, 600))
    async with httpx.AsyncClient(base_url=api, timeout=60, limits=WITHIN_FRONT) as client:
        responses = await asyncio.gather(*(
            client.post("/api/orders", json=order_body(amount="0.05", client_order_id=f"mk-{i}"))
            for i in range(200)))
        assert all(r.status_code == 202 for r in responses)
        ids = [r.json()["order_id"] for r in responses]
        ray.kill(ray.get_actor(MANAGER, namespace=engine.settings.namespace), no_restart=False)
        orders = [await wait_terminal(client, i, timeout_s=120) for i in ids]
    assert all(o["status"] == "confirmed" for o in orders), [
        o["failure_reason"] for o in orders if o["status"] != "confirmed"]
    for order in orders:
        assert_exactly_once(engine, db, order)


async def test_reconnect_with_since_seq_replays_without_gap_or_duplicate(
    api: str, ws_url: str, db: psycopg.Connection[Any], faults: Any
) -> None:
    faults.latency((100, 100), (400, 400))
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"op": "submit", "order": order_body()}))
        accepted = json.loads(await asyncio.wait_for(ws.recv(), 10))
        seen = list(accepted["order"]["events"])
        seen.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))  # routing
    order_id = accepted["order"]["order_id"]
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "order_ids": [order_id],
                                  "since_seq": {order_id: seen[-1]["seq"]}}))
        while seen[-1]["status"] not in TERMINAL:
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    assert [(e["seq"], e["status"]) for e in seen] == db_sequence(db, order_id)
    assert [e["status"] for e in seen] == [
        "pending", "routing", "building", "submitted", "confirmed"]


async def test_replay_of_a_finished_order_sends_exactly_the_missing_events(
    api: str, ws_url: str, db: psycopg.Connection[Any]
) -> None:
    async with httpx.AsyncClient(base_url=api) as client:
        created = (await client.post("/api/orders", json=order_body())).json()
        await wait_terminal(client, created["order_id"])
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "order_ids": [created["order_id"]],
                                  "since_seq": 2}))
        frames = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(3)]
        await ws.send(json.dumps({"op": "unsubscribe", "order_ids": [created["order_id"]]}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert [(f["seq"], f["status"]) for f in frames] == db_sequence(db, created["order_id"])[2:]
    assert ack["type"] == "unsubscribed"


def order_count(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM orders").fetchone()
    assert row is not None
    return int(row[0])


async def burst(client: httpx.AsyncClient, prefix: str, n: int, *, at_most: int,
                refusal: str) -> list[httpx.Response]:
    """Submit `n` orders at once: each is accepted (1 to `at_most` of them) or refused with
    429, a Retry-After and `refusal` in its error. Returns the responses, in order."""
    responses = await asyncio.gather(*(client.post("/api/orders", json=order_body(
        amount="0.01", client_order_id=f"{prefix}-{i}")) for i in range(n)))
    accepted = [r for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code == 429]
    assert len(accepted) + len(refused) == n, [r.status_code for r in responses]
    assert 1 <= len(accepted) <= at_most
    for r in refused:
        assert int(r.headers["Retry-After"]) >= 1
        assert refusal in r.json()["error"]
    return list(responses)


def assert_only_these_stored(engine: Engine, db: psycopg.Connection[Any], before: int,
                             orders: list[dict[str, Any]]) -> None:
    """The orders table grew by exactly `orders`, each confirmed with exactly one swap."""
    assert order_count(db) - before == len(orders), "a refused order was half accepted"
    assert all(o["status"] == "confirmed" for o in orders)
    for order in orders:
        assert_exactly_once(engine, db, order)


async def test_a_basket_sent_at_once_to_an_idle_engine_is_accepted_whole(
    engine: Engine, api: str, db: psycopg.Connection[Any]
) -> None:
    """120 submissions at once, nearly twice what one replica works on plus what HAProxy
    queues before its queue counts as long (64): a burst, not an overload, so each waits its
    turn and is accepted, none refused (until the eighth session the front answered 429 to
    all past the 64th), and each fills exactly once."""
    before = order_count(db)
    async with httpx.AsyncClient(base_url=api, timeout=60,
                                 limits=httpx.Limits(max_connections=120)) as client:
        responses = await asyncio.gather(*(client.post("/api/orders", json=order_body(
            amount="0.01", client_order_id=f"basket-{i}")) for i in range(120)))
        assert [r.status_code for r in responses] == [202] * 120, [
            (r.status_code, r.text) for r in responses if r.status_code != 202][:3]
        orders = [await wait_terminal(client, r.json()["order_id"]) for r in responses]
    assert_only_these_stored(engine, db, before, orders)


async def test_burst_past_the_open_order_bound_gets_clean_429s(
    engine: Engine, api: str, db: psycopg.Connection[Any], faults: Any
) -> None:
    faults.latency((0, 0), (800, 800))
    faults.limits(max_open_orders=5, per_minute=0)
    before = order_count(db)
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        responses = await burst(client, "burst", 25, at_most=5, refusal="limit is 5")
        orders = [await wait_terminal(client, r.json()["order_id"]) for r in responses
                  if r.status_code == 202]
    assert_only_these_stored(engine, db, before, orders)


async def test_at_capacity_refuses_past_the_admission_bound_and_loses_nothing(
    engine: Engine, api: str, ws_url: str, db: psycopg.Connection[Any], faults: Any
) -> None:
    """The latency admission, cold (no rate measured yet), admits `floor` orders in flight;
    a burst past it is refused with 429 and a Retry-After, and nothing refused is stored."""
    faults.latency((0, 0), (800, 800))
    faults.limits(max_open_orders=0, per_minute=0, admission_budget_ms=500, admission_floor=4)
    before = order_count(db)
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        responses = await burst(client, "capacity", 20, at_most=4, refusal="at capacity")
        async with websockets.connect(ws_url) as ws:  # the WebSocket submit is refused alike
            await ws.send(json.dumps({"op": "submit", "order": order_body(amount="0.01")}))
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert frame["type"] == "error" and frame["status"] == 429 and frame["retry_after"] >= 1
        orders = [await wait_terminal(client, r.json()["order_id"]) for r in responses
                  if r.status_code == 202]
        # Room again once they finished: a refused order is accepted when it comes back.
        first_refused = next(i for i, r in enumerate(responses) if r.status_code == 429)
        again = await client.post("/api/orders", json=order_body(
            amount="0.01", client_order_id=f"capacity-{first_refused}"))
        assert again.status_code == 202, again.text
        orders.append(await wait_terminal(client, again.json()["order_id"]))
    assert_only_these_stored(engine, db, before, orders)


async def test_account_rate_limit_answers_429_and_ws_error_frame(
    api: str, ws_url: str, faults: Any
) -> None:
    faults.limits(max_open_orders=0, per_minute=3)
    async with httpx.AsyncClient(base_url=api) as client:
        codes = [(await client.post("/api/orders", json=order_body(amount="0.01"))).status_code
                 for _ in range(3)]
        limited = await client.post("/api/orders", json=order_body(amount="0.01"))
    assert codes == [202, 202, 202]
    assert limited.status_code == 429
    assert "per minute" in limited.json()["error"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"op": "submit", "order": order_body(amount="0.01")}))
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert frame["type"] == "error"
    assert frame["status"] == 429
    assert frame["retry_after"] >= 1


async def test_database_outage_answers_503_and_recovers_by_itself(
    engine: Engine, api: str, faults: Any
) -> None:
    assert engine.embedded is not None
    faults.latency((0, 0), (1500, 1500))
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        in_flight = [(await client.post("/api/orders", json=order_body(amount="0.02")))
                     .json()["order_id"] for _ in range(5)]
        engine.embedded.stop()
        try:
            during = [await client.post("/api/orders", json=order_body(amount="0.02"))
                      for _ in range(3)]
            read = await client.get(f"/api/orders/{in_flight[0]}")
        finally:
            engine.embedded.start()
        assert all(r.status_code == 503 for r in during), [r.text for r in during]
        assert all("Retry-After" in r.headers for r in during)
        assert read.status_code == 503
        deadline = time.monotonic() + 60
        while True:
            response = await client.post("/api/orders", json=order_body(amount="0.02"))
            if response.status_code == 202:
                break
            assert response.status_code == 503, response.text
            assert time.monotonic() < deadline, "the service did not recover"
            await asyncio.sleep(0.5)
        orders = [await wait_terminal(client, i, timeout_s=90)
                  for i in [*in_flight, response.json()["order_id"]]]
    assert all(o["status"] == "confirmed" for o in orders), [o["status"] for o in orders]
