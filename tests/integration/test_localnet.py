"""`dexec up` on the local Solana cluster (DEXEC_NETWORK=localnet): orders over REST and
WebSocket reach `confirmed` through solana-py, and the wallet's token balances, read back
over RPC, change by exactly what the orders say. One `dexec up` process for the module."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateways.localnet.cluster import MINTS
from gateways.solana.rpc import SolanaRpc
from gateways.solana.wallet import associated_account
from tests.conftest import with_key
from tests.integration.client import order_body, wait_terminal, ws_submit
from tests.kit.app import App
from tests.kit.localnet import free_port, landed_swaps, memos

pytestmark = pytest.mark.integration

PORT = 18_600  # a stack opens PORT..PORT+99: clear of every other test's


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    data_dir: Path = tmp_path_factory.mktemp("dexec-localnet")
    running = App(data_dir, port=PORT, namespace="dexec-localnet", env={
        "DEXEC_NETWORK": "localnet",
        "DEXEC_LOCALNET_PORT": str(free_port()),
        "DEXEC_LOCALNET_PROFILE": "zero",
        "DEXEC_TEST_HOOKS": "1",
    })
    running.start("up.log")
    yield running
    running.stop()


@pytest.fixture
async def client(app: App) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app.url, headers=app.auth(), timeout=30) as c:
        yield c


@pytest.fixture
async def rpc(client: httpx.AsyncClient, app: App) -> AsyncIterator[SolanaRpc]:
    port = json.loads(app.env["DEXEC_LOCALNET_PORT"])
    chain = SolanaRpc(f"http://127.0.0.1:{port}")
    yield chain
    await chain.close()


async def balances(rpc: SolanaRpc, owner: str) -> dict[str, int]:
    found = {"lamports": await rpc.balance(owner)}
    for symbol in ("SOL", "USDC", "RAY"):
        found[symbol] = await rpc.token_balance(associated_account(owner, str(MINTS[symbol]))) or 0
    return found


async def test_rest_and_websocket_orders_settle_on_chain_with_exact_balances(
        app: App, client: httpx.AsyncClient, rpc: SolanaRpc) -> None:
    wallet = (await client.get("/api/wallet")).json()
    assert wallet["network"] == "localnet" and float(wallet["sol"]) > 100
    owner = wallet["address"]
    before = await balances(rpc, owner)

    accepted = await client.post("/api/orders", json=order_body(amount="1.5"))
    assert accepted.status_code == 202, accepted.text
    sold = await wait_terminal(client, accepted.json()["order_id"])
    middle = await balances(rpc, owner)
    key = app.auth()["Authorization"].removeprefix("Bearer ")
    ws_url = with_key(app.url.replace("http://", "ws://") + "/ws", key)
    bought, events = await ws_submit(ws_url, order_body(input_mint="USDC", output_mint="RAY",
                                                        amount="100"))
    final = await wait_terminal(client, bought["order_id"])
    after = await balances(rpc, owner)

    assert sold["status"] == "confirmed", sold
    assert events[-1]["status"] == "confirmed" and final["status"] == "confirmed", final
    # SOL -> USDC: exactly the order's output arrived; the SOL left as lamports (wrapped).
    assert middle["USDC"] - before["USDC"] == int(sold["amount_out_base"])
    assert before["lamports"] - middle["lamports"] >= 1_500_000_000
    assert middle["SOL"] == before["SOL"]
    # USDC -> RAY (over the WebSocket): exactly 100 USDC left, exactly the output arrived.
    assert middle["USDC"] - after["USDC"] == 100 * 10**6
    assert after["RAY"] - middle["RAY"] == int(final["amount_out_base"])

    # Exactly one executed swap per order on the chain, carrying the order's memo.
    for order in (sold, final):
        assert await landed_swaps(app.data_dir, rpc, order["order_id"]) == [order["signature"]]


async def test_a_swap_the_price_ran_away_from_fails_and_moves_no_token(
        app: App, client: httpx.AsyncClient, rpc: SolanaRpc) -> None:
    port = json.loads(app.env["DEXEC_LOCALNET_PORT"])
    owner = (await client.get("/api/wallet")).json()["address"]
    before = await balances(rpc, owner)
    async with httpx.AsyncClient() as chain:
        await chain.post(f"http://127.0.0.1:{port}/localnet/faults", json={"adverse_bps": 300})
        try:
            accepted = await client.post("/api/orders", json=order_body(
                input_mint="USDC", output_mint="SOL", amount="50", slippage_bps=50))
            order = await wait_terminal(client, accepted.json()["order_id"])
        finally:
            await chain.post(f"http://127.0.0.1:{port}/localnet/faults",
                             json={"adverse_bps": 0})
    await asyncio.sleep(0.2)
    after = await balances(rpc, owner)

    assert order["status"] == "failed" and "slippage" in (order["failure_reason"] or "")
    assert after["USDC"] == before["USDC"] and after["SOL"] == before["SOL"]


NO_FAULTS = {"http_429_rate": 0.0, "http_503_rate": 0.0, "drop_send_rate": 0.0,
             "timeout_rate": 0.0, "malformed_rate": 0.0, "delay_ms": 0, "adverse_bps": 0}


async def set_faults(app: App, **faults: object) -> None:
    """Set the local cluster's faults; with none given, clear them all."""
    faults = faults or dict(NO_FAULTS)
    port = json.loads(app.env["DEXEC_LOCALNET_PORT"])
    async with httpx.AsyncClient() as chain:
        answer = await chain.post(f"http://127.0.0.1:{port}/localnet/faults", json=faults)
        answer.raise_for_status()


async def test_rpc_errors_never_lose_an_order_or_fill_it_twice(
        app: App, client: httpx.AsyncClient, rpc: SolanaRpc) -> None:
    # Timeouts and malformed answers come after the cluster did the work (a send executed):
    # the engine cannot know the outcome and must find it, never send a second swap.
    await set_faults(app, http_429_rate=0.05, http_503_rate=0.05, timeout_rate=0.05,
                     malformed_rate=0.05, hang_s=3.0)
    try:
        responses = await asyncio.gather(*(client.post("/api/orders", json=order_body(
            amount="0.01", client_order_id=f"flaky-{i}")) for i in range(12)))
        orders = [await wait_terminal(client, r.json()["order_id"], timeout_s=90)
                  for r in responses]
    finally:
        await set_faults(app)
    for order in orders:
        landed = await landed_swaps(app.data_dir, rpc, order["order_id"])
        if order["status"] == "confirmed":
            assert len(landed) == 1, order
        else:  # retries ran out: then nothing of it executed
            assert landed == [], order
    # One call in five fails; an attempt makes about eight: most orders still fill.
    assert sum(o["status"] == "confirmed" for o in orders) >= 6, [
        o["failure_reason"] for o in orders]


async def test_dropped_sends_are_rebroadcast_and_only_an_expired_swap_is_signed_anew(
        app: App, client: httpx.AsyncClient, rpc: SolanaRpc) -> None:
    # Every send is dropped for longer than a blockhash lives (150 slots of 50 ms): the first
    # signature expires unlanded, and only then may a second be signed.
    await set_faults(app, drop_send_rate=1.0)
    accepted = await client.post("/api/orders", json=order_body(amount="0.02"))
    order_id = accepted.json()["order_id"]
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            order = (await client.get(f"/api/orders/{order_id}")).json()
            if order["attempts"] >= 2 and order["status"] == "submitted":
                break
            assert asyncio.get_running_loop().time() < deadline, order
            await asyncio.sleep(0.2)
    finally:
        await set_faults(app)
    final = await wait_terminal(client, order_id, timeout_s=60)

    assert final["status"] == "confirmed", final
    landed = await landed_swaps(app.data_dir, rpc, order_id)
    assert len(landed) == 1 and landed == [final["signature"]]
    first = [e for e in final["events"] if e["attempt"] == 1 and e.get("signature")]
    assert first and first[0]["signature"] != final["signature"]
    (state,) = await rpc.statuses([first[0]["signature"]], search_history=True)
    assert state is None  # the expired one never landed


async def venue_faults(app: App, venue: str, **faults: object) -> None:
    port = json.loads(app.env["DEXEC_LOCALNET_PORT"])
    async with httpx.AsyncClient() as chain:
        answer = await chain.post(f"http://127.0.0.1:{port}/localnet/venue-faults",
                                  json={"venue": venue, **faults})
        answer.raise_for_status()


CLEAR_VENUE = {"http_503_rate": 0.0, "timeout_rate": 0.0, "tamper": ""}


async def a_swap_raydium_wins(client: httpx.AsyncClient) -> dict[str, str]:
    """An order body (small, between seeded pools) whose best quote is clearly Raydium's."""
    for x, y in (("SOL", "USDC"), ("SOL", "USDT"), ("USDC", "USDT"), ("RAY", "SOL"),
                 ("RAY", "USDC")):
        for a, b in ((x, y), (y, x)):
            amount = "0.05" if a == "SOL" else "5"
            found = (await client.get("/api/quotes", params={
                "input_mint": a, "output_mint": b, "amount": amount})).json()
            outs = {q["venue"]: int(q["amount_out"]) for q in found["quotes"]}
            if len(outs) == 2 and outs["raydium"] > outs["meteora"] * 1.003:
                return order_body(input_mint=a, output_mint=b, amount=amount)
    raise AssertionError("no pair where Raydium is clearly best")


async def raydium_winning_order_under(app: App, client: httpx.AsyncClient,
                                      **faults: object) -> dict[str, Any]:
    """An order Raydium's quote would win, submitted while Raydium's API has `faults`;
    the order once terminal (the faults are cleared after)."""
    body = await a_swap_raydium_wins(client)
    await venue_faults(app, "raydium", **faults)
    try:
        accepted = await client.post("/api/orders", json=body)
        return await wait_terminal(client, accepted.json()["order_id"], timeout_s=60)
    finally:
        await venue_faults(app, "raydium", **CLEAR_VENUE)


@pytest.mark.parametrize("faults", [{"http_503_rate": 1.0},
                                    {"timeout_rate": 1.0, "hang_s": 5.0}])
async def test_a_venue_down_or_timing_out_leaves_the_order_to_the_other(
        app: App, client: httpx.AsyncClient, rpc: SolanaRpc, faults: dict[str, object],
        ) -> None:
    order = await raydium_winning_order_under(app, client, **faults)  # it cannot answer
    assert order["status"] == "confirmed" and order["venue"] == "meteora", order
    assert await landed_swaps(app.data_dir, rpc, order["order_id"]) == [order["signature"]]


@pytest.mark.parametrize("tamper", ["drain", "program"])
async def test_a_venue_transaction_sending_tokens_elsewhere_is_never_signed(
        app: App, client: httpx.AsyncClient, rpc: SolanaRpc, tamper: str) -> None:
    order = await raydium_winning_order_under(app, client, tamper=tamper)
    assert order["venue"] == "raydium" and order["status"] == "failed", order
    assert "refused to sign" in (order["failure_reason"] or ""), order
    assert order.get("signature") is None  # nothing was signed, let alone sent
    assert await landed_swaps(app.data_dir, rpc, order["order_id"]) == []


async def test_a_dry_run_is_simulated_on_the_cluster_and_never_sent(
        app: App, client: httpx.AsyncClient, rpc: SolanaRpc) -> None:
    owner = (await client.get("/api/wallet")).json()["address"]
    before = await balances(rpc, owner)
    accepted = await client.post("/api/orders", json={
        **order_body(input_mint="USDC", output_mint="RAY", amount="10"), "dry_run": True})
    assert accepted.status_code == 202 and accepted.json()["dry_run"] is True
    order = await wait_terminal(client, accepted.json()["order_id"])
    assert order["status"] == "simulated", order
    assert [e["status"] for e in order["events"]] == ["pending", "routing", "building",
                                                      "simulated"]
    assert int(order["amount_out_base"]) > 0 and order["signature"] is None
    assert await landed_swaps(app.data_dir, rpc, order["order_id"]) == []
    assert memos_of(app, order["order_id"]) == []  # not even sent, let alone landed
    after = await balances(rpc, owner)
    assert after["USDC"] == before["USDC"] and after["RAY"] == before["RAY"]

    # A dry run that would fail on chain fails here, with the chain's reason.
    too_much = await client.post("/api/orders", json={
        **order_body(input_mint="USDC", output_mint="RAY", amount="5000000"), "dry_run": True})
    failed = await wait_terminal(client, too_much.json()["order_id"])
    assert failed["status"] == "failed", failed


def memos_of(app: App, order_id: str) -> list[tuple[str, str]]:
    return [(s, m) for s, m in memos(app.data_dir) if m.startswith(f"dexec:{order_id}:")]
