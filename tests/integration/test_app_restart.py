"""The whole app (`dexec up`) SIGKILLed with 200 orders in flight, then started again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.client import TERMINAL

PORT = 18_100


class App:
    """One `dexec up` process group with its own data folder, port and Ray."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{PORT}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "DEXEC_"))}
        self.env.update({
            "DEXEC_DATA_DIR": str(data_dir),
            "DEXEC_PORT": str(PORT),
            "DEXEC_NAMESPACE": "dexec-restart",
            "DEXEC_SIM_QUOTE_LATENCY_MS": "[0,20]",
            # Swaps take long enough that the kill surely finds orders in flight.
            "DEXEC_SIM_SWAP_LATENCY_MS": "[1500,3000]",
            "DEXEC_SIM_BLOCK_TIME_MS": "100",
            "DEXEC_SIM_BLOCKHASH_VALID_BLOCKS": "50",
            "DEXEC_CONFIRM_POLL_S": "0.05",
            "DEXEC_RETRY_BASE_DELAY_S": "0.05",
        })

    def auth(self) -> dict[str, str]:
        """The dev key `dexec up` wrote to its data directory (the same across restarts)."""
        key = (self.data_dir / "api-key").read_text().strip()
        return {"Authorization": f"Bearer {key}"}

    def start(self, log_name: str) -> None:
        log = (self.data_dir / log_name).open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dexec.cli", "up", "--num-cpus", "2"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.data_dir / log_name).read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("dexec up did not become healthy")

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash or an OOM kill would."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        # Ray's worker processes (the HTTP proxy among them) notice their raylet is gone
        # within seconds; wait until nothing of the old app answers any more.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
            except httpx.HTTPError:
                return
            time.sleep(0.2)
        raise AssertionError("the killed app still answers")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def database(self) -> psycopg.Connection[Any]:
        host = self.data_dir / "pgdata"
        return psycopg.connect(f"postgresql://postgres:@/postgres?host={host}", autocommit=True)


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
