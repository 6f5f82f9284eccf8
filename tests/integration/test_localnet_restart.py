"""Processes killed mid-flight on the local Solana cluster, which lives on, as a real cluster
would: the whole app, the workers, the OrderManager, a worker at each step, and PostgreSQL.
Every order still fills exactly once, counted on the chain.

A module of its own: its `dexec up` processes must not run beside test_localnet.py's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateways.solana.rpc import SolanaRpc
from tests.integration.client import WITHIN_FRONT, order_body, wait_terminal
from tests.kit.app import App
from tests.kit.localnet import free_port, landed_swaps

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def localnet_app(tmp_path: Path, port: int, namespace: str, *, profile: str = "realistic",
                 **env: str) -> Iterator[App]:
    """A `dexec up` on a local cluster of its own (test hooks on); afterwards everything it
    left running is stopped: the app, the cluster, the embedded PostgreSQL."""
    app = App(tmp_path, port=port, namespace=namespace, env={
        "DEXEC_NETWORK": "localnet", "DEXEC_LOCALNET_PORT": str(free_port()),
        "DEXEC_LOCALNET_PROFILE": profile, "DEXEC_TEST_HOOKS": "1", **env})
    try:
        yield app
    finally:
        from storage.embedded import EmbeddedPostgres

        app.stop()
        stop_localnet(tmp_path)
        left = EmbeddedPostgres(tmp_path)  # a killed app's, or one the test restarted
        if (left.data_dir / "postmaster.pid").exists():
            left.start()
            left.stop()


async def slow_chain(app: App, delay_ms: int) -> None:
    """Make every answer of the app's local cluster `delay_ms` late (its test hook)."""
    async with httpx.AsyncClient() as chain:
        answer = await chain.post(f"{rpc_url(app)}/localnet/faults",
                                  json={"delay_ms": delay_ms})
        answer.raise_for_status()


def rpc_url(app: App) -> str:
    return f"http://127.0.0.1:{json.loads(app.env['DEXEC_LOCALNET_PORT'])}"


def stop_localnet(data_dir: Path) -> None:
    """Stop the local cluster a killed app left running (its own session outlives the app)."""
    pid_file = data_dir / "localnet" / "pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)


def assert_in_flight(app: App) -> None:
    with app.database() as db:
        row = db.execute("SELECT count(*) FROM orders WHERE status NOT IN"
                         " ('confirmed', 'failed')").fetchone()
    assert row is not None and row[0] > 0, "the kill came too late to prove anything"


async def assert_each_filled_once_on_chain(app: App, orders: list[dict[str, Any]]) -> None:
    """Every order confirmed, with exactly one executed swap on the chain: its own."""
    chain = SolanaRpc(rpc_url(app))
    try:
        for order in orders:
            assert order["status"] == "confirmed", order["failure_reason"]
            assert await landed_swaps(app.data_dir, chain, order["order_id"]) == [
                order["signature"]]
    finally:
        await chain.close()


async def test_whole_app_sigkilled_mid_flight_fills_every_order_once_on_chain(
        tmp_path: Path) -> None:
    """SIGKILL `dexec up` with orders in flight; the cluster lives on, like a real one; the
    restarted app finishes every order with exactly one executed swap on the chain."""
    with localnet_app(tmp_path, 18_700, "dexec-localnet-kill") as app:
        app.start("first.log")
        # Every RPC answer 300 ms late: orders surely in flight when the kill comes.
        await slow_chain(app, 300)
        # Within the front's places, as a well-behaved client: on a slow machine 60 at once
        # waited past the front's queue timeout (503), which is not what this test is about.
        async with httpx.AsyncClient(base_url=app.url, timeout=60, headers=app.auth(),
                                     limits=WITHIN_FRONT) as client:
            responses = await asyncio.gather(*(client.post("/api/orders", json=order_body(
                amount="0.02", client_order_id=f"kill-{i}")) for i in range(60)))
        assert [r.status_code for r in responses] == [202] * 60
        ids = [r.json()["order_id"] for r in responses]
        app.kill()
        assert_in_flight(app)

        app.start("second.log")
        await slow_chain(app, 0)  # the cluster lived on, and its faults with it
        async with httpx.AsyncClient(base_url=app.url, timeout=60, headers=app.auth()) as client:
            orders = [await wait_terminal(client, i, timeout_s=120) for i in ids]
        await assert_each_filled_once_on_chain(app, orders)


async def test_killed_workers_and_a_killed_manager_lose_nothing_and_fill_nothing_twice(
        tmp_path: Path) -> None:
    """SIGKILL every process of a kind while 40 orders are in flight (Ray restarts them):
    first the ExecutionWorkers, then, on the same stack once those orders are done, the
    OrderManager (one stack for both: a stack costs tens of seconds)."""
    import psutil

    with localnet_app(tmp_path, 18_800, "dexec-localnet-kill2") as app:
        app.start("up.log")
        assert app.proc is not None
        async with httpx.AsyncClient(base_url=app.url, timeout=60, headers=app.auth(),
                                     limits=WITHIN_FRONT) as client:
            for victim in ("ray::ExecutionWorker", "ray::OrderManager"):
                await slow_chain(app, 200)
                responses = await asyncio.gather(*(client.post("/api/orders", json=order_body(
                    amount="0.02", client_order_id=f"{victim}-{i}")) for i in range(40)))
                assert [r.status_code for r in responses] == [202] * 40
                await asyncio.sleep(0.5)
                killed = [p for p in psutil.Process(app.proc.pid).children(recursive=True)
                          if victim in " ".join(p.cmdline())]
                assert killed, f"no {victim} process found"
                for process in killed:
                    process.kill()
                await slow_chain(app, 0)
                assert_in_flight(app)
                orders = [await wait_terminal(client, r.json()["order_id"], timeout_s=120)
                          for r in responses]
                await assert_each_filled_once_on_chain(app, orders)


async def test_a_database_outage_mid_flight_loses_nothing_and_fills_nothing_twice(
        tmp_path: Path) -> None:
    """PostgreSQL stops with orders in flight on the local cluster: requests get 503, and
    when it is back every order fills exactly once, counted on the chain."""
    pgdata = tmp_path / "pgdata"

    def pg_ctl(*args: str) -> None:
        """pg_ctl on the app's embedded server, as the user pgserver runs it as."""
        from pgserver._commands import pg_ctl as run  # type: ignore[attr-defined]

        run(["-w", *args], pgdata=pgdata, user="pgserver" if os.geteuid() == 0 else None)

    with localnet_app(tmp_path, 19_100, "dexec-localnet-db") as app:
        app.start("up.log")
        await slow_chain(app, 300)
        async with httpx.AsyncClient(base_url=app.url, timeout=60, headers=app.auth()) as client:
            in_flight = [(await client.post("/api/orders", json=order_body(
                amount="0.02", client_order_id=f"outage-{i}"))).json()["order_id"]
                for i in range(5)]
            pg_ctl("-m", "fast", "stop")
            try:
                during = [await client.post("/api/orders", json=order_body(amount="0.02"))
                          for _ in range(3)]
            finally:
                pg_ctl("-o", '-h ""', "-o", f"-k {pgdata}", "-l", str(pgdata / "log"), "start")
                await slow_chain(app, 0)
            assert all(r.status_code == 503 for r in during), [r.text for r in during]
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                response = await client.post("/api/orders", json=order_body(amount="0.02"))
                if response.status_code == 202:
                    break
                assert response.status_code == 503, response.text
                assert asyncio.get_running_loop().time() < deadline, response.text
                await asyncio.sleep(0.5)
            orders = [await wait_terminal(client, i, timeout_s=120)
                      for i in [*in_flight, response.json()["order_id"]]]
        await assert_each_filled_once_on_chain(app, orders)


async def test_a_worker_killed_at_each_step_fills_the_order_exactly_once_on_chain(
        tmp_path: Path) -> None:
    """A worker dies (SIGKILL) as an order reaches each step, once per step: the first order
    is killed at `routing` and, resumed, at `signed`; the second (a resumed order never
    passes `sent` again) at `sent`. Each order still fills once, and from `signed` on by the
    signature recorded before the kill: nothing is signed anew. One stack for the three
    kills (a stack costs tens of seconds; each kill restarts the worker all the same)."""
    with localnet_app(tmp_path, 19_200, "dexec-localnet-steps", profile="zero",
                      DEXEC_TEST_CRASH_ONCE_AT='["routing", "signed", "sent"]') as app:
        app.start("up.log")
        orders = []
        async with httpx.AsyncClient(base_url=app.url, timeout=60, headers=app.auth()) as client:
            for killed_at in (("routing", "signed"), ("sent",)):
                accepted = await client.post("/api/orders", json=order_body(amount="0.75"))
                orders.append(await wait_terminal(client, accepted.json()["order_id"],
                                                  timeout_s=120))
                for point in killed_at:
                    assert (tmp_path / f"crashed-at-{point}").exists(), f"no kill at {point}"
        await assert_each_filled_once_on_chain(app, orders)
        with app.database() as db:
            for order in orders:  # the recorded signature decided: nothing was re-signed
                signed = db.execute(
                    "SELECT count(*) FROM swap_transactions WHERE order_id = %s",
                    (order["order_id"],)).fetchone()
                assert signed is not None and signed[0] == 1, order
