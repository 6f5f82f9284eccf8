"""Both venues of the local cluster as the engine reaches them on any network: Raydium through
its Trade API (the local cluster's, building CPMM swaps), Meteora DLMM pairs from its pool API,
quoted from their accounts; every swap signed, sent and landed for real."""

from __future__ import annotations

import pytest
from solders.pubkey import Pubkey
from solders.token.associated import get_associated_token_address

from core.errors import SlippageExceeded
from core.quotes import choose_best, min_amount_out
from gateways.localnet.cluster import MINTS
from gateways.solana import dlmm
from tests.kit.localnet import landed
from tests.unit.gateways.solana.conftest import World

SOL, USDC, RAY = (str(MINTS[s]) for s in ("SOL", "USDC", "RAY"))


@pytest.mark.parametrize(("venue", "mint_in", "mint_out", "amount"), [
    ("meteora", SOL, USDC, 2 * 10**9),
    ("meteora", USDC, SOL, 300 * 10**6),
    ("raydium", USDC, SOL, 300 * 10**6),
    ("raydium", SOL, USDC, 2 * 10**9),
    ("meteora", SOL, RAY, 10**9),
])
async def test_a_quoted_swap_lands_paying_exactly_the_quote(
        world: World, venue: str, mint_in: str, mint_out: str, amount: int) -> None:
    gateway = world.venues[venue]
    before_out, lamports = world.tokens(mint_out), world.lamports()
    quote = await gateway.quote(mint_in, mint_out, amount)
    swap = await gateway.build_swap(quote, min_amount_out(quote.amount_out, 50), "dexec:t:1")
    await gateway.send(swap)
    status = await landed(gateway, swap.signature)
    assert status.confirmed, status.error
    if mint_out == SOL:  # unwrapped in the same transaction: it arrives as lamports
        assert world.tokens(SOL) == 0
        assert status.amount_out == quote.amount_out == world.lamports() - lamports + 5000
    else:
        assert status.amount_out == quote.amount_out == world.tokens(mint_out) - before_out


async def test_a_dlmm_swap_crossing_bins_moves_the_active_bin(world: World) -> None:
    gateway = world.venues["meteora"]
    (listed,) = [p for p in world.net.pools if p.venue == "meteora"
                 and {p.mint_x, p.mint_y} == {SOL, USDC}]
    address = Pubkey.from_string(listed.address)
    before = dlmm.LbPair.decode(bytes(world.net.ledger._existing(address).data)).active_id
    quote = await gateway.quote(SOL, USDC, 2_000 * 10**9)  # 60,000 USDC a bin: 5 bins
    swap = await gateway.build_swap(quote, min_amount_out(quote.amount_out, 50), "dexec:t:2")
    await gateway.send(swap)
    assert (await landed(gateway, swap.signature)).confirmed
    after = dlmm.LbPair.decode(bytes(world.net.ledger._existing(address).data)).active_id
    assert after < before - 3  # selling X walks down


async def test_a_dlmm_swap_below_its_minimum_is_the_program_s_slippage_error(
        world: World) -> None:
    gateway = world.venues["meteora"]
    quote = await gateway.quote(SOL, USDC, 10**9)
    swap = await gateway.build_swap(quote, quote.amount_out + 1, "dexec:t:3")
    with pytest.raises(SlippageExceeded):
        await gateway.send(swap)
    assert world.tokens(USDC) == 10_000 * 10**6


async def test_both_venues_quote_and_the_best_wins(world: World) -> None:
    quotes = [await v.quote(SOL, USDC, 10**9) for v in world.venues.values()]
    assert {q.venue for q in quotes} == {"raydium", "meteora"}
    assert all(140 * 10**6 < q.amount_out < 160 * 10**6 for q in quotes)
    best = choose_best(quotes)
    assert best is not None and best.amount_out == max(q.amount_out for q in quotes)


@pytest.mark.parametrize("venue", ["raydium", "meteora"])
async def test_a_front_run_past_the_slippage_fails_the_swap_with_nothing_moved(
        world: World, venue: str) -> None:
    gateway = world.venues[venue]
    quote = await gateway.quote(USDC, SOL, 50 * 10**6)
    swap = await gateway.build_swap(quote, min_amount_out(quote.amount_out, 50), "dexec:t:4")
    world.net.ledger.adverse_bps = 100
    with pytest.raises(SlippageExceeded):
        await gateway.send(swap)
    assert world.tokens(USDC) == 10_000 * 10**6
    world.net.ledger.adverse_bps = 30  # within the 50 bps allowed: it fills, 30 bps worse
    lamports = world.lamports()
    await gateway.send(swap)
    status = await landed(gateway, swap.signature)
    assert status.confirmed
    assert status.amount_out == world.lamports() - lamports + 5000  # unwrapped SOL
    assert status.amount_out < quote.amount_out
    assert status.amount_out >= min_amount_out(quote.amount_out, 50)


async def test_sol_bought_after_sol_was_sold_arrives_exactly_with_the_rent_back(
        world: World) -> None:
    """Selling SOL leaves the wallet's (empty) wSOL account open; buying SOL closes it: the
    output is still exactly the quote, and the account's rent comes home too."""
    gateway = world.venues["raydium"]
    sold = await gateway.quote(SOL, USDC, 10**9)
    swap = await gateway.build_swap(sold, min_amount_out(sold.amount_out, 50), "dexec:t:5")
    await gateway.send(swap)
    assert (await landed(gateway, swap.signature)).confirmed
    wsol = get_associated_token_address(world.wallet.pubkey(), MINTS["SOL"])
    rent = world.net.ledger.balance(wsol)
    assert rent > 0 and world.tokens(SOL) == 0  # open, empty

    lamports = world.lamports()
    bought = await gateway.quote(USDC, SOL, 100 * 10**6)
    swap = await gateway.build_swap(bought, min_amount_out(bought.amount_out, 50), "dexec:t:6")
    await gateway.send(swap)
    status = await landed(gateway, swap.signature)

    assert status.amount_out == bought.amount_out
    assert world.lamports() - lamports == bought.amount_out - 5000 + rent
    assert world.net.ledger.account(wsol) is None  # closed
