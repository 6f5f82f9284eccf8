"""The engine's Solana RPC client against the local cluster's JSON-RPC server (loopback)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from solders.keypair import Keypair
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from core.errors import (
    BlockhashExpired,
    DexecError,
    InsufficientFunds,
    RateLimited,
    SlippageExceeded,
    VenueTimeout,
    VenueUnavailable,
)
from gateways.solana import cpmm
from gateways.solana.rpc import SolanaRpc, transaction_error
from tests.kit.localnet import SOL, USDC, Cluster, serving


@pytest.fixture
async def rpc(cluster: Cluster) -> AsyncIterator[SolanaRpc]:
    client = SolanaRpc(cluster.url, timeout_s=1.0)
    yield client
    await client.close()


async def until_confirmed(rpc: SolanaRpc, signature: str) -> None:
    for _ in range(100):
        (state,) = await rpc.statuses([signature])
        if state is not None and state.confirmed:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{signature} never confirmed")


async def test_a_swap_lands_and_its_output_is_read_from_the_token_balances(
        cluster: Cluster, rpc: SolanaRpc) -> None:
    pool = cluster.ledger.pool_state(cluster.pool)
    expected = cpmm.swap_out(10**9, cluster.ledger.token_amount(pool.token_0_vault) or 0,
                             cluster.ledger.token_amount(pool.token_1_vault) or 0,
                             cpmm.AmmConfig(2500)).amount_out
    blockhash, last_valid = await rpc.latest_blockhash()
    assert 145 <= last_valid - await rpc.block_height() <= 150  # 150 blocks, a slot or two on

    signature = await rpc.send(cluster.swap(10**9, 1, blockhash))
    await until_confirmed(rpc, signature)

    me = str(cluster.wallet.pubkey())
    assert await rpc.token_delta(signature, me, str(USDC)) == expected
    assert await rpc.token_delta(signature, me, str(SOL)) == -(10**9)
    from solders.token.associated import get_associated_token_address
    ata = str(get_associated_token_address(cluster.wallet.pubkey(), USDC))
    assert await rpc.token_balance(ata) == expected == cluster.tokens(USDC)
    assert await rpc.token_balance(str(Keypair().pubkey())) is None


async def test_the_same_bytes_sent_again_are_the_same_signature_executed_once(
        cluster: Cluster, rpc: SolanaRpc) -> None:
    blockhash, _ = await rpc.latest_blockhash()
    tx = cluster.swap(10**9, 1, blockhash)
    first = await rpc.send(tx)
    again = await rpc.send(tx)  # AlreadyProcessed: the engine's rebroadcast
    unchecked = await rpc.send(tx, preflight=False)
    assert first == again == unchecked
    assert cluster.tokens(SOL) == 4 * 10**9


async def test_slippage_is_terminal_and_moves_nothing(cluster: Cluster, rpc: SolanaRpc) -> None:
    blockhash, _ = await rpc.latest_blockhash()
    tx = cluster.swap(10**9, 10**12, blockhash)
    with pytest.raises(SlippageExceeded):
        await rpc.send(tx)
    signature = await rpc.send(tx, preflight=False)
    await until_confirmed(rpc, signature)
    (state,) = await rpc.statuses([signature])
    assert state is not None
    assert isinstance(transaction_error(state.err), SlippageExceeded)
    assert cluster.tokens(SOL) == 5 * 10**9 and cluster.tokens(USDC) == 0


async def test_an_expired_blockhash_is_expiry_and_never_lands(
        cluster: Cluster, rpc: SolanaRpc) -> None:
    old = str(cluster.ledger.blockhash_at(cluster.ledger.slot() - 151))
    with pytest.raises(BlockhashExpired):
        await rpc.send(cluster.swap(10**9, 1, old))
    signature = await rpc.send(cluster.swap(10**9, 1, old, memo="o-2"), preflight=False)
    await asyncio.sleep(0.1)
    assert await rpc.statuses([signature], search_history=True) == [None]


async def test_more_than_the_wallet_holds_is_insufficient_funds(
        cluster: Cluster, rpc: SolanaRpc) -> None:
    blockhash, _ = await rpc.latest_blockhash()
    with pytest.raises(InsufficientFunds):
        await rpc.send(cluster.swap(50 * 10**9, 1, blockhash))


async def failed_send(cluster: Cluster, rpc: SolanaRpc, faults: dict[str, object],
                      error: type[Exception]) -> bytes:
    """Send a 1 SOL swap under `faults`: it must raise a retryable `error`. Faults are
    cleared after; the signed bytes are returned for a resend."""
    blockhash, _ = await rpc.latest_blockhash()
    tx = cluster.swap(10**9, 1, blockhash)
    cluster.set_faults(**faults)
    with pytest.raises(error) as raised:
        await rpc.send(tx)
    assert raised.value.retryable  # type: ignore[attr-defined]
    cluster.set_faults()
    return tx


@pytest.mark.parametrize(("faults", "error"), [
    ({"http_429_rate": 1.0}, RateLimited),
    ({"http_503_rate": 1.0}, VenueUnavailable),
    ({"delay_ms": 1500}, VenueTimeout),
])
async def test_transport_failures_are_retryable_and_change_nothing(
        cluster: Cluster, rpc: SolanaRpc, faults: dict[str, object],
        error: type[Exception]) -> None:
    await failed_send(cluster, rpc, faults, error)
    if "delay_ms" not in faults:
        assert cluster.tokens(SOL) == 5 * 10**9  # refused before it reached the ledger


async def test_a_dropped_send_answers_its_signature_and_a_resend_lands_it(
        cluster: Cluster, rpc: SolanaRpc) -> None:
    blockhash, _ = await rpc.latest_blockhash()
    tx = cluster.swap(10**9, 1, blockhash)
    cluster.set_faults(drop_send_rate=1.0)
    signature = await rpc.send(tx)
    assert await rpc.statuses([signature]) == [None]
    cluster.set_faults()
    assert await rpc.send(tx) == signature  # the engine rebroadcasts the same bytes
    await until_confirmed(rpc, signature)
    assert cluster.tokens(SOL) == 4 * 10**9


@pytest.mark.parametrize(("faults", "error"), [
    ({"timeout_rate": 1.0, "hang_s": 3.0}, VenueTimeout),
    ({"malformed_rate": 1.0}, VenueUnavailable),
])
async def test_a_send_whose_answer_is_lost_may_have_landed_and_lands_once(
        cluster: Cluster, rpc: SolanaRpc, faults: dict[str, object],
        error: type[Exception]) -> None:
    """The cluster executes the send and the answer never arrives whole: the error is
    retryable, and rebroadcasting the same bytes finds it done (one fill, not two)."""
    tx = await failed_send(cluster, rpc, faults, error)
    signature = await rpc.send(tx)  # AlreadyProcessed: the first one had executed
    await until_confirmed(rpc, signature)
    assert cluster.tokens(SOL) == 4 * 10**9  # it had executed, and only once


async def test_statuses_travel_in_batches_of_256(cluster: Cluster, rpc: SolanaRpc) -> None:
    unknown = [str(Keypair().sign_message(bytes([i % 256, i // 256]))) for i in range(600)]
    assert await rpc.statuses(unknown) == [None] * 600


@contextlib.asynccontextmanager
async def node_answering(handler: Callable[[Request], Awaitable[Response]],
                         ) -> AsyncIterator[SolanaRpc]:
    """A SolanaRpc client of a fake node whose every answer `handler` gives."""
    async with serving(Starlette(routes=[Route("/", handler, methods=["POST"])])) as url:
        node = SolanaRpc(url, timeout_s=1.0)
        try:
            yield node
        finally:
            await node.close()


async def test_a_malformed_answer_is_retryable() -> None:
    async def garbage(_: Request) -> Response:
        return PlainTextResponse("{not json")

    async with node_answering(garbage) as bad:
        with pytest.raises(VenueUnavailable):
            await bad.block_height()


@pytest.mark.parametrize("error", [
    {"code": -32005, "message": "Node is unhealthy", "data": {"numSlotsBehind": 5}},
    {"code": -32016, "message": "Minimum context slot has not been reached",
     "data": {"contextSlot": 5}},
    {"code": -32603, "message": "Internal error"},
])
async def test_a_node_that_cannot_answer_now_is_retryable_never_terminal(
        error: dict[str, object]) -> None:
    """Such answers say nothing about a transaction's fate: the engine must reconcile."""
    async def unhealthy(request: Request) -> Response:
        rid = (await request.json()).get("id")
        return JSONResponse({"jsonrpc": "2.0", "id": rid, "error": error})

    signature = str(Keypair().sign_message(b"x"))
    async with node_answering(unhealthy) as node:
        for call in (node.block_height(), node.statuses([signature]),
                     node.token_balance(str(Keypair().pubkey())),
                     node.swap_output(signature, str(Keypair().pubkey())),
                     node.send(b"\x01" + bytes(64) + b"not a transaction")):
            with pytest.raises(DexecError) as raised:
                await call
            assert raised.value.retryable, (call, raised.value)


async def test_a_dry_run_simulates_an_unsigned_copy_that_could_never_land(
        cluster: Cluster) -> None:
    """A signed transaction handed to a provider could be broadcast and land: a dry run
    sends only a copy with zeroed signatures, and the node's own blockhash."""
    import base64

    from solders.signature import Signature
    from solders.transaction import VersionedTransaction

    seen: list[list[object]] = []

    async def node(request: Request) -> Response:
        body = await request.json()
        seen.append(body["params"])
        return JSONResponse({"jsonrpc": "2.0", "id": body["id"], "result": {
            "context": {"slot": 1}, "value": {"err": None, "logs": [], "accounts": None,
                                              "unitsConsumed": 1234, "returnData": None}}})

    blockhash = cluster.ledger.latest_blockhash()[0]
    signed = cluster.swap(10**9, 1, blockhash)
    async with node_answering(node) as fake:
        assert await fake.simulate(signed) == 1234
    (params,) = seen
    sent = VersionedTransaction.from_bytes(base64.b64decode(str(params[0])))
    assert list(sent.signatures) == [Signature.default()]
    assert sent.message == VersionedTransaction.from_bytes(signed).message
    assert params[1]["sigVerify"] is False and params[1]["replaceRecentBlockhash"] is True

    async with node_answering(_sim_error) as failing:
        with pytest.raises(SlippageExceeded):
            await failing.simulate(signed)


async def _sim_error(request: Request) -> Response:
    body = await request.json()
    return JSONResponse({"jsonrpc": "2.0", "id": body["id"], "result": {
        "context": {"slot": 1}, "value": {"err": {"InstructionError": [1, {"Custom": 6005}]},
                                          "logs": [], "accounts": None, "unitsConsumed": 1,
                                          "returnData": None}}})
