"""The whole app (`dexec up`) SIGKILLed with 200 orders in flight, then started again.

Two resting limit orders ride along: a gtc one must still rest after the restart, and a gtt
one whose time runs out while the app is down must come back expired, never executed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.client import TERMINAL, WITHIN_FRONT
from tests.kit.app import App


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    running = App(tmp_path)
    yield running
    running.stop()
    # The embedded PostgreSQL outlived the SIGKILL by design; stop it here.
    from storage.embedded import EmbeddedPostgres

    left_running = EmbeddedPostgres(tmp_path)
    if (left_running.data_dir / "postmaster.pid").exists():
        left_running.start()  # a handle on the running server, to stop it
        left_running.stop()


async def test_app_sigkilled_with_200_in_flight_finishes_every_order_exactly_once(
    app: App,
) -> None:
    app.start("first.log")
    async with httpx.AsyncClient(base_url=app.url, timeout=60, headers=app.auth(),
                                 limits=WITHIN_FRONT) as client:
        quote = (await client.get("/api/quotes", params={
            "input_mint": "SOL", "output_mint": "USDC", "amount": "0.05"})).json()["best"]
        out_of_reach = str(int(quote["amount_out"]) * 10 // 50_000)  # ten times the price
        gtc = (await client.post("/api/orders", json={
            "type": "limit", "input_mint": "SOL", "output_mint": "USDC", "amount": "0.05",
            "limit_price": out_of_reach})).json()
        responses = await asyncio.gather(*(client.post("/api/orders", json={
            "type": "market", "input_mint": "SOL", "output_mint": "USDC", "amount": "0.05",
            "client_order_id": f"restart-{i}"}) for i in range(200)))
        assert [r.status_code for r in responses] == [202] * 200
        ids = [r.json()["order_id"] for r in responses]
        expires = datetime.now(UTC) + timedelta(seconds=3)
        gtt = (await client.post("/api/orders", json={
            "type": "limit", "input_mint": "SOL", "output_mint": "USDC", "amount": "0.05",
            "limit_price": out_of_reach, "time_in_force": "gtt",
            "expires_at": expires.isoformat()})).json()
    app.kill()
    killed_at = datetime.now(UTC)

    with app.database() as db:
        row = db.execute("SELECT count(*) FROM orders WHERE status NOT IN ('confirmed', 'failed')"
                         ).fetchone()
        assert row is not None
        in_flight_at_kill = row[0]
    assert in_flight_at_kill > 0, "the kill came too late to prove anything"

    # Its time runs out while the app is down.
    await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds() + 0.5))
    app.start("second.log")
    async with httpx.AsyncClient(base_url=app.url, timeout=60, headers=app.auth()) as client:
        deadline = time.monotonic() + 180
        orders: list[dict[str, Any]] = []
        for order_id in ids:
            while True:
                order = (await client.get(f"/api/orders/{order_id}")).json()
                if order["status"] in TERMINAL:
                    orders.append(order)
                    break
                assert time.monotonic() < deadline, f"{order_id} stuck in {order['status']}"
                await asyncio.sleep(0.1)

        while gtt["status"] not in TERMINAL:
            assert time.monotonic() < deadline, "the gtt order never expired"
            await asyncio.sleep(0.1)
            gtt = (await client.get(f"/api/orders/{gtt['order_id']}")).json()
        gtc = (await client.get(f"/api/orders/{gtc['order_id']}")).json()

    # Pending or open at the kill, expired by the engine that came back, never routed.
    assert [e["status"] for e in gtt["events"]] in (["pending", "open", "expired"],
                                                    ["pending", "expired"])
    assert datetime.fromisoformat(gtt["events"][-1]["at"]) > killed_at  # by the new engine
    assert gtc["status"] == "open" and gtc["seq"] == 2
    assert all(o["status"] == "confirmed" for o in orders), [
        o["failure_reason"] for o in orders if o["status"] != "confirmed"]
    with app.database() as db:
        for order in orders:
            seqs = [e["seq"] for e in order["events"]]
            assert seqs == list(range(1, len(seqs) + 1))
            executed = db.execute(
                "SELECT count(*) FROM swap_transactions s JOIN simchain.transactions t"
                " USING (signature) WHERE s.order_id = %s AND t.state = 'confirmed'",
                (order["order_id"],),
            ).fetchone()
            assert executed is not None and executed[0] == 1, order["order_id"]
