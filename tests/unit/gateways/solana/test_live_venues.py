"""The live venues' gateways against the local cluster's Raydium Trade API and Meteora pool
API: a transaction that does more than the order is never signed, venue faults are retryable,
the priority fee is the auto-fee capped, and legacy transactions work as V0 ones do."""

from __future__ import annotations

import base64

import httpx
import pytest
from solders.keypair import Keypair
from solders.transaction import VersionedTransaction

from core.errors import (
    NoRoute,
    RateLimited,
    UnsafeTransaction,
    VenueRefused,
    VenueTimeout,
    VenueUnavailable,
)
from core.quotes import min_amount_out
from gateways.localnet.cluster import MINTS
from gateways.localnet.venues import AUTO_FEE
from gateways.meteora.pools import MeteoraPairs
from gateways.raydium.venue import RaydiumTradeVenue
from tests.kit.localnet import MEMO, landed
from tests.unit.gateways.solana.conftest import World

SOL, USDC, RAY = (str(MINTS[s]) for s in ("SOL", "USDC", "RAY"))


async def venue_faults(world: World, venue: str, **faults: object) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{world.url}/localnet/venue-faults",
                                   json={"venue": venue, **faults})
        answer.raise_for_status()


def raydium(world: World, **options: object) -> RaydiumTradeVenue:
    return RaydiumTradeVenue(world.rpc, world.wallet, trade_url=f"{world.url}/raydium/trade",
                             api_url=f"{world.url}/raydium/api", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(("tamper", "why"), [
    ("drain", "token instruction"),
    ("program", "allow-list"),
    ("min_out", "minimum out"),
])
async def test_a_venue_transaction_that_does_more_than_the_order_is_never_signed(
        world: World, tamper: str, why: str) -> None:
    gateway = world.venues["raydium"]
    quote = await gateway.quote(SOL, USDC, 10**9)
    await venue_faults(world, "raydium", tamper=tamper)
    executed = len(world.net.ledger.executed)
    with pytest.raises(UnsafeTransaction, match=why) as refused:
        await gateway.build_swap(quote, min_amount_out(quote.amount_out, 50), "dexec:t:1")
    assert not refused.value.retryable
    assert len(world.net.ledger.executed) == executed  # nothing signed, nothing sent


@pytest.mark.parametrize(("faults", "error"), [
    ({"http_503_rate": 1.0}, VenueUnavailable),
    ({"http_429_rate": 1.0}, RateLimited),
    ({"timeout_rate": 1.0, "hang_s": 2.0}, VenueTimeout),
])
async def test_venue_api_faults_are_retryable(world: World, faults: dict[str, object],
                                              error: type[Exception]) -> None:
    await venue_faults(world, "raydium", **faults)
    with pytest.raises(error) as raised:
        await raydium(world, timeout_s=0.5).quote(SOL, USDC, 10**9)
    assert raised.value.retryable  # type: ignore[attr-defined]


async def test_the_venue_s_own_refusal_is_its_reason() -> None:
    from gateways.raydium.models import parse_compute

    with pytest.raises(VenueRefused, match="ROUTE_NOT_FOUND"):
        parse_compute({"id": "x", "success": False, "version": "V1", "msg": "ROUTE_NOT_FOUND"})


@pytest.mark.parametrize("version", ["V0", "LEGACY"])
async def test_the_priority_fee_is_the_auto_fee_capped_and_the_memo_is_added(
        world: World, version: str) -> None:
    cap = AUTO_FEE["h"] // 2
    gateway = raydium(world, tx_version=version, priority_cap_micro_lamports=cap)
    quote = await gateway.quote(USDC, RAY, 100 * 10**6)
    swap = await gateway.build_swap(quote, min_amount_out(quote.amount_out, 50), "dexec:t:9")
    tx = VersionedTransaction.from_bytes(swap.tx_bytes)
    assert (type(tx.message).__name__ == "MessageV0") == (version == "V0")
    if version == "V0":  # the pool's accounts come from its lookup table, as on mainnet
        assert tx.message.address_table_lookups
    keys = tx.message.account_keys
    memos = [bytes(ix.data) for ix in tx.message.instructions
             if keys[ix.program_id_index] == MEMO]
    assert memos == [b"dexec:t:9"]
    await gateway.send(swap)
    status = await landed(gateway, swap.signature)
    assert status.confirmed and status.amount_out == quote.amount_out
    found = world.net.ledger.executed[swap.signature]
    assert found.fee == 5000 + -(-300_000 * cap // 1_000_000)  # 300k units at the capped price


async def test_meteora_pairs_come_from_its_pool_api_and_survive_its_outage(
        world: World) -> None:
    pairs = MeteoraPairs(f"{world.url}/meteora")
    listed = await pairs.pools()
    assert len(listed) == 5  # one per pair
    expected = {p.address for p in world.net.pools if p.venue == "meteora"}
    assert {str(p.address) for p in listed} == expected

    await venue_faults(world, "meteora", http_503_rate=1.0)
    cold = MeteoraPairs(f"{world.url}/meteora")
    with pytest.raises(VenueUnavailable):
        await cold.pools()  # never listed: nothing to trade on
    assert await pairs.pools() == listed  # listed before: kept
    await pairs.close()
    await cold.close()


async def test_configured_meteora_pairs_are_the_only_ones(world: World) -> None:
    (one,) = [p.address for p in world.net.pools if p.venue == "meteora"
              and {p.mint_x, p.mint_y} == {SOL, USDC}]
    unknown = str(Keypair().pubkey())  # Meteora's API answers 404: left out, with a warning
    pairs = MeteoraPairs(f"{world.url}/meteora", [one, unknown])
    assert [str(p.address) for p in await pairs.pools()] == [one]
    await pairs.close()


async def test_a_stale_pair_list_answers_at_once_while_a_fresh_one_is_fetched(
        world: World) -> None:
    import asyncio

    now = [0.0]
    pairs = MeteoraPairs(f"{world.url}/meteora", clock=lambda: now[0])
    listed = await pairs.pools()
    await venue_faults(world, "meteora", timeout_rate=1.0, hang_s=3.0)
    now[0] += 301.0  # stale
    started = asyncio.get_running_loop().time()
    assert await pairs.pools() == listed  # the last list, without waiting for the API
    assert asyncio.get_running_loop().time() - started < 0.5
    await pairs.close()


async def test_a_route_raydium_does_not_have_is_its_refusal(world: World) -> None:
    with pytest.raises(VenueRefused, match="ROUTE_NOT_FOUND"):
        await world.venues["raydium"].quote(SOL, str(Keypair().pubkey()), 10**9)


def test_transactions_answer_in_either_shape() -> None:
    from gateways.raydium.models import parse_transactions

    raw = base64.b64encode(b"\x01" + bytes(64) + b"\x80").decode()
    as_list = {"success": True, "data": [{"transaction": raw}]}
    as_object = {"success": True, "data": {"transaction": raw}}
    assert parse_transactions(as_list) == parse_transactions(as_object)


async def test_a_pool_directory_naming_the_wrong_mints_is_caught_on_the_chain(
        world: World) -> None:
    """The pool API says SOL/USDT, the chain says SOL/USDC: no quote, never a swap into the
    wrong token."""
    from solders.pubkey import Pubkey

    from gateways.solana.programs import DlmmProgram
    from gateways.solana.venue import ChainVenue, Pool

    (real,) = [p.address for p in world.net.pools if p.venue == "meteora"
               and {p.mint_x, p.mint_y} == {SOL, USDC}]
    usdt = MINTS["USDT"]
    lying = ChainVenue("meteora", DlmmProgram(), world.rpc,
                       [Pool(Pubkey.from_string(real), MINTS["SOL"], usdt)], world.wallet)
    with pytest.raises(NoRoute, match="on the chain"):
        await lying.quote(SOL, str(usdt), 10**9)


async def test_a_multi_hop_raydium_route_is_refused_at_the_quote(world: World) -> None:
    import json
    from pathlib import Path

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from tests.kit.localnet import serving

    body = json.loads((Path(__file__).parents[3] / "contracts" / "fixtures"
                       / "raydium_compute_ok.json").read_text())
    body["data"]["routePlan"] *= 2  # two hops

    async def compute(_: Request) -> Response:
        return JSONResponse(body)

    app = Starlette(routes=[Route("/compute/swap-base-in", compute)])
    async with serving(app) as url:
        venue = RaydiumTradeVenue(world.rpc, world.wallet, trade_url=url, api_url=url)
        with pytest.raises(VenueRefused, match="2-hop"):
            await venue.quote(SOL, USDC, 1_000_000_000)
        await venue.close()
