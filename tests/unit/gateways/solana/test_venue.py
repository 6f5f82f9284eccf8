"""ChainVenue over the local cluster: quotes from pool accounts, swaps that land with their
real output, SOL wrapped from the wallet's lamports, and what the wallet cannot pay refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from solders.keypair import Keypair

from core.errors import InsufficientFunds, NoRoute, SlippageExceeded
from core.quotes import min_amount_out
from gateways.solana import cpmm
from gateways.solana.programs import CpmmProgram
from gateways.solana.rpc import SolanaRpc
from gateways.solana.venue import ChainVenue, Pool
from tests.kit.localnet import SOL, USDC, Cluster, landed

RAY = "4k3Dyjzvzp8eMZWUXbBCjEvwSkkk59S5iCNLY3QrkX6R"


@pytest.fixture
async def venue(cluster: Cluster) -> AsyncIterator[ChainVenue]:
    rpc = SolanaRpc(cluster.url, timeout_s=2.0)
    yield ChainVenue("raydium", CpmmProgram(), rpc, [Pool(cluster.pool, SOL, USDC)],
                     cluster.wallet)
    await rpc.close()


async def test_a_quote_is_the_program_s_own_price(cluster: Cluster, venue: ChainVenue) -> None:
    state = cluster.ledger.pool_state(cluster.pool)
    expected = cpmm.swap_out(10**9, cluster.ledger.token_amount(state.token_0_vault) or 0,
                             cluster.ledger.token_amount(state.token_1_vault) or 0,
                             cpmm.AmmConfig(2500))
    quote = await venue.quote(str(SOL), str(USDC), 10**9)
    assert quote.amount_out == expected.amount_out and quote.fee == expected.trade_fee
    assert quote.fee_bps == 25 and quote.pool == str(cluster.pool)
    backwards = await venue.quote(str(USDC), str(SOL), 150 * 10**6)
    assert 0.99 * 10**9 < backwards.amount_out < 10**9


async def test_a_swap_lands_with_the_output_the_wallet_received(
        cluster: Cluster, venue: ChainVenue) -> None:
    lamports = cluster.ledger.balance(cluster.wallet.pubkey())
    quote = await venue.quote(str(SOL), str(USDC), 10**9)
    swap = await venue.build_swap(quote, min_amount_out(quote.amount_out, 50), "dexec:o-1:1")
    await venue.send(swap)
    await venue.send(swap)  # a rebroadcast of the same bytes changes nothing

    status = await landed(venue, swap.signature)

    assert status.confirmed and status.amount_out == quote.amount_out
    assert cluster.tokens(USDC) == quote.amount_out
    # SOL was wrapped from the wallet's lamports: its wSOL balance did not move.
    assert cluster.tokens(SOL) == 5 * 10**9
    assert cluster.ledger.balance(cluster.wallet.pubkey()) == lamports - 10**9 - 5000
    assert any("dexec:o-1:1" in line for line in cluster.ledger.executed[swap.signature].logs)


async def test_a_price_that_moved_past_the_minimum_fails_terminal_with_nothing_moved(
        cluster: Cluster, venue: ChainVenue) -> None:
    quote = await venue.quote(str(SOL), str(USDC), 10**9)
    swap = await venue.build_swap(quote, quote.amount_out + 1, "dexec:o-2:1")
    lamports = cluster.ledger.balance(cluster.wallet.pubkey())

    with pytest.raises(SlippageExceeded):
        await venue.send(swap)  # the node's preflight refuses it: nothing sent, no fee
    assert cluster.ledger.balance(cluster.wallet.pubkey()) == lamports
    await venue.send(swap)  # a rebroadcast skips preflight: it lands, failed
    status = await landed(venue, swap.signature)

    assert not status.confirmed and status.error_code == "slippage_exceeded"
    assert cluster.tokens(USDC) == 0 and cluster.tokens(SOL) == 5 * 10**9
    assert cluster.ledger.balance(cluster.wallet.pubkey()) == lamports - 5000


async def test_no_pool_is_no_route(venue: ChainVenue) -> None:
    with pytest.raises(NoRoute):
        await venue.quote(str(SOL), RAY, 10**9)


async def test_the_wallet_s_funds_are_checked_before_routing(
        cluster: Cluster, venue: ChainVenue) -> None:
    await venue.check_funds(str(SOL), 9 * 10**9)
    with pytest.raises(InsufficientFunds):
        await venue.check_funds(str(SOL), 11 * 10**9)
    with pytest.raises(InsufficientFunds):
        await venue.check_funds(str(USDC), 1)
    empty = ChainVenue("raydium", CpmmProgram(), venue._rpc, [], Keypair())
    with pytest.raises(InsufficientFunds, match="network fee"):
        await empty.check_funds(str(USDC), 1)
