"""The whole app (`dexec up`) SIGKILLed with 200 orders in flight, then started again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.client import TERMINAL
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
    async with httpx.AsyncClient(base_url=app.url, timeout=60, headers=app.auth()) as client:
        responses = await asyncio.gather(*(client.post("/api/orders", json={
            "type": "market", "input_mint": "SOL", "output_mint": "USDC", "amount": "0.05",
            "client_order_id": f"restart-{i}"}) for i in range(200)))
    assert [r.status_code for r in responses] == [202] * 200
    ids = [r.json()["order_id"] for r in responses]
    app.kill()

    with app.database() as db:
        row = db.execute("SELECT count(*) FROM orders WHERE status NOT IN ('confirmed', 'failed')"
                         ).fetchone()
        assert row is not None
        in_flight_at_kill = row[0]
    assert in_flight_at_kill > 0, "the kill came too late to prove anything"

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
