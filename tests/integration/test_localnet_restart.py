"""The whole app SIGKILLed mid-flight on the local Solana cluster, which lives on, as a real
cluster would; the restarted app fills every order exactly once, counted on the chain.

A module of its own: its `dexec up` processes must not run beside test_localnet.py's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from gateways.solana.rpc import SolanaRpc
from tests.integration.client import order_body, wait_terminal
from tests.kit.app import App
from tests.kit.localnet import free_port, landed_swaps

pytestmark = pytest.mark.integration


async def slow_chain(app: App, delay_ms: int) -> None:
    """Make every answer of the app's local cluster `delay_ms` late (its test hook)."""
    port = json.loads(app.env["DEXEC_LOCALNET_PORT"])
    async with httpx.AsyncClient() as chain:
        answer = await chain.post(f"http://127.0.0.1:{port}/localnet/faults",
                                  json={"delay_ms": delay_ms})
        answer.raise_for_status()


def stop_localnet(data_dir: Path) -> None:
    """Stop the local cluster a killed app left running (its own session outlives the app)."""
    pid_file = data_dir / "localnet" / "pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)


async def test_whole_app_sigkilled_mid_flight_fills_every_order_once_on_chain(
        tmp_path: Path) -> None:
    """SIGKILL `dexec up` with orders in flight; the cluster lives on, like a real one; the
    restarted app finishes every order with exactly one executed swap on the chain."""
    restarting = App(tmp_path, port=18_700, namespace="dexec-localnet-kill", env={
        "DEXEC_NETWORK": "localnet", "DEXEC_LOCALNET_PORT": str(free_port()),
        "DEXEC_LOCALNET_PROFILE": "realistic", "DEXEC_TEST_HOOKS": "1"})
    try:
        restarting.start("first.log")
        # Every RPC answer 300 ms late: orders surely in flight when the kill comes.
        await slow_chain(restarting, 300)
        async with httpx.AsyncClient(base_url=restarting.url, timeout=60,
                                     headers=restarting.auth()) as client:
            responses = await asyncio.gather(*(client.post("/api/orders", json=order_body(
                amount="0.02", client_order_id=f"kill-{i}")) for i in range(60)))
        assert [r.status_code for r in responses] == [202] * 60
        ids = [r.json()["order_id"] for r in responses]
        restarting.kill()
        with restarting.database() as db:
            row = db.execute("SELECT count(*) FROM orders WHERE status NOT IN"
                             " ('confirmed', 'failed')").fetchone()
        assert row is not None and row[0] > 0, "the kill came too late to prove anything"

        restarting.start("second.log")
        await slow_chain(restarting, 0)  # the cluster lived on, and its faults with it
        port = json.loads(restarting.env["DEXEC_LOCALNET_PORT"])
        chain = SolanaRpc(f"http://127.0.0.1:{port}")
        async with httpx.AsyncClient(base_url=restarting.url, timeout=60,
                                     headers=restarting.auth()) as client:
            orders = [await wait_terminal(client, i, timeout_s=120) for i in ids]
        try:
            for order in orders:
                assert order["status"] == "confirmed", order["failure_reason"]
                assert await landed_swaps(restarting.data_dir, chain, order["order_id"]) == [
                    order["signature"]]
        finally:
            await chain.close()
    finally:
        restarting.stop()
        stop_localnet(tmp_path)
        from storage.embedded import EmbeddedPostgres

        left = EmbeddedPostgres(tmp_path)
        if (left.data_dir / "postmaster.pid").exists():
            left.start()
            left.stop()


@pytest.mark.parametrize("victim", ["ray::ExecutionWorker", "ray::OrderManager"])
async def test_a_killed_worker_or_manager_loses_nothing_and_fills_nothing_twice(
        tmp_path: Path, victim: str) -> None:
    """SIGKILL every process of the kind while 40 orders are in flight (Ray restarts them)."""
    import psutil

    # Each stack opens its port..port+99, and a stopped one's HAProxy may linger a moment:
    # each case gets ports of its own.
    port = 18_800 if victim == "ray::ExecutionWorker" else 18_900
    app = App(tmp_path, port=port, namespace="dexec-localnet-kill2", env={
        "DEXEC_NETWORK": "localnet", "DEXEC_LOCALNET_PORT": str(free_port()),
        "DEXEC_LOCALNET_PROFILE": "realistic", "DEXEC_TEST_HOOKS": "1"})
    try:
        app.start("up.log")
        await slow_chain(app, 200)
        assert app.proc is not None
        async with httpx.AsyncClient(base_url=app.url, timeout=60, headers=app.auth()) as client:
            responses = await asyncio.gather(*(client.post("/api/orders", json=order_body(
                amount="0.02", client_order_id=f"victim-{i}")) for i in range(40)))
            assert [r.status_code for r in responses] == [202] * 40
            await asyncio.sleep(0.5)
            killed = [p for p in psutil.Process(app.proc.pid).children(recursive=True)
                      if victim in " ".join(p.cmdline())]
            assert killed, f"no {victim} process found"
            for process in killed:
                process.kill()
            await slow_chain(app, 0)
            with app.database() as db:
                row = db.execute("SELECT count(*) FROM orders WHERE status NOT IN"
                                 " ('confirmed', 'failed')").fetchone()
            assert row is not None and row[0] > 0, "the kill came too late to prove anything"
            orders = [await wait_terminal(client, r.json()["order_id"], timeout_s=120)
                      for r in responses]
        port = json.loads(app.env["DEXEC_LOCALNET_PORT"])
        chain = SolanaRpc(f"http://127.0.0.1:{port}")
        try:
            for order in orders:
                assert order["status"] == "confirmed", order["failure_reason"]
                assert await landed_swaps(app.data_dir, chain, order["order_id"]) == [
                    order["signature"]]
        finally:
            await chain.close()
    finally:
        app.stop()
        stop_localnet(tmp_path)


async def test_a_database_outage_mid_flight_loses_nothing_and_fills_nothing_twice(
        tmp_path: Path) -> None:
    """PostgreSQL stops with orders in flight on the local cluster: requests get 503, and
    when it is back every order fills exactly once, counted on the chain."""
    from storage.embedded import EmbeddedPostgres

    def pg_ctl(*args: str) -> None:
        """pg_ctl on the app's embedded server, as the user pgserver runs it as."""
        from pgserver._commands import pg_ctl as run  # type: ignore[import-untyped]

        pgdata = tmp_path / "pgdata"
        run(["-w", *args], pgdata=pgdata, user="pgserver" if os.geteuid() == 0 else None)

    app = App(tmp_path, port=19_100, namespace="dexec-localnet-db", env={
        "DEXEC_NETWORK": "localnet", "DEXEC_LOCALNET_PORT": str(free_port()),
        "DEXEC_LOCALNET_PROFILE": "realistic", "DEXEC_TEST_HOOKS": "1"})
    database = EmbeddedPostgres(tmp_path)
    try:
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
                pgdata = tmp_path / "pgdata"
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
        port = json.loads(app.env["DEXEC_LOCALNET_PORT"])
        chain = SolanaRpc(f"http://127.0.0.1:{port}")
        try:
            for order in orders:
                assert order["status"] == "confirmed", order["failure_reason"]
                assert await landed_swaps(app.data_dir, chain, order["order_id"]) == [
                    order["signature"]]
        finally:
            await chain.close()
    finally:
        app.stop()
        stop_localnet(tmp_path)
        if (database.data_dir / "postmaster.pid").exists():
            database.start()
            database.stop()


@pytest.mark.parametrize(("point", "port"), [("routing", 19_200), ("signed", 19_300),
                                             ("sent", 19_400)])
async def test_a_worker_killed_at_each_step_fills_the_order_exactly_once_on_chain(
        tmp_path: Path, point: str, port: int) -> None:
    """The worker dies (SIGKILL) as the order reaches `point`; the order still fills once,
    and from `signed` on, by the signature recorded before the kill: nothing signed anew."""
    app = App(tmp_path, port=port, namespace=f"dexec-localnet-{point}", env={
        "DEXEC_NETWORK": "localnet", "DEXEC_LOCALNET_PORT": str(free_port()),
        "DEXEC_LOCALNET_PROFILE": "zero", "DEXEC_TEST_HOOKS": "1",
        "DEXEC_TEST_CRASH_ONCE_AT": point})
    try:
        app.start("up.log")
        async with httpx.AsyncClient(base_url=app.url, timeout=60, headers=app.auth()) as client:
            accepted = await client.post("/api/orders", json=order_body(amount="0.75"))
            order = await wait_terminal(client, accepted.json()["order_id"], timeout_s=120)
        assert (tmp_path / f"crashed-at-{point}").exists(), "no worker was killed"
        assert order["status"] == "confirmed", order["failure_reason"]
        port_rpc = json.loads(app.env["DEXEC_LOCALNET_PORT"])
        chain = SolanaRpc(f"http://127.0.0.1:{port_rpc}")
        try:
            assert await landed_swaps(app.data_dir, chain, order["order_id"]) == [
                order["signature"]]
        finally:
            await chain.close()
        with app.database() as db:
            signed = db.execute("SELECT count(*) FROM swap_transactions WHERE order_id = %s",
                                (order["order_id"],)).fetchone()
        assert signed is not None
        if point != "routing":  # the recorded signature decided: nothing was re-signed
            assert signed[0] == 1
    finally:
        app.stop()
        stop_localnet(tmp_path)
