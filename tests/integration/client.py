"""Client-side helpers the integration tests share."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import psycopg
import ray
import websockets

from actors.shell import CHAIN
from core.settings import Settings
from dexec.launch import Engine

TERMINAL = {"confirmed", "failed", "simulated", "cancelled", "expired"}

# A client that fires more submissions at once than one replica works on plus what HAProxy
# queues for it before the queue counts as long (DEXEC_INGRESS_MAX_SUBMISSIONS +
# DEXEC_INGRESS_SUBMISSION_QUEUE, 64 by default) waits in HAProxy's queue as a burst, up to
# DEXEC_INGRESS_SUBMISSION_BURST more a second, and meets 429s past that. Tests that send
# large bursts and are not about the front keep at most a replica's share in flight, as a
# well-behaved client does.
WITHIN_FRONT = httpx.Limits(
    max_connections=Settings.model_fields["ingress_max_submissions"].default)


def order_count(db: psycopg.Connection[Any]) -> int:
    """Return how many orders the database holds (a rejected request must add none)."""
    row = db.execute("SELECT count(*) FROM orders").fetchone()
    assert row is not None
    return int(row[0])


def order_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "market", "input_mint": "SOL", "output_mint": "USDC", "amount": "1.5",
        "slippage_bps": 50,
    }
    body.update(overrides)
    return body


async def wait_terminal(client: httpx.AsyncClient, order_id: str, timeout_s: float = 30.0
                        ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(f"/api/orders/{order_id}")
        assert response.status_code == 200, response.text
        order: dict[str, Any] = response.json()
        if order["status"] in TERMINAL:
            return order
        assert time.monotonic() < deadline, f"order {order_id} stuck in {order['status']}"
        await asyncio.sleep(0.05)


async def ws_submit(ws_url: str, body: dict[str, Any], timeout_s: float = 30.0
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Submit over the WebSocket; return the accepted order and every event until terminal."""
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"op": "submit", "order": body}))
        accepted = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
        assert accepted["type"] == "accepted", accepted
        events = list(accepted["order"]["events"])
        while events[-1]["status"] not in TERMINAL:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
            assert frame["type"] == "order", frame
            events.append(frame)
        return accepted["order"], events


def executed_swaps(engine: Engine, signatures: list[str]) -> int:
    chain = ray.get_actor(CHAIN, namespace=engine.settings.namespace)
    return int(ray.get(chain.executed_swaps.remote(signatures)))
