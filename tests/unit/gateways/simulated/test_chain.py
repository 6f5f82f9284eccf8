"""Unit tests for the simulated chain: signatures, expiry, exactly-once, failures, drift."""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

import pytest
from solders.hash import Hash
from solders.keypair import Keypair
from solders.signature import Signature
from solders.transaction import Transaction

from core.errors import BlockhashExpired, InvalidInput, NoRoute
from core.quotes import TxStatus
from gateways.simulated.chain import PAIRS, SimChain
from gateways.simulated.program import build_swap_transaction, decode_swap
from tests.kit.chain import (
    BLOCK_TIME_S,
    SOL,
    T0,
    USDC,
    VALID_BLOCKS,
    make_chain,
    signed_swap,
)


def funded_wallet(chain: SimChain, seed: int = 1) -> Keypair:
    wallet = Keypair.from_seed(bytes([seed]) * 32)
    chain.fund(str(wallet.pubkey()), {"SOL": 1_000 * SOL, "USDC": 100_000 * USDC})
    return wallet


def balances(chain: SimChain, wallet: Keypair) -> tuple[int, int]:
    owner = str(wallet.pubkey())
    return chain.balances.get((owner, "SOL"), 0), chain.balances.get((owner, "USDC"), 0)


def only(statuses: list[TxStatus | None]) -> TxStatus:
    (status,) = statuses
    assert status is not None
    return status


# --- a swap that lands ------------------------------------------------------------------------


# Meteora's bins are constant-sum: only a swap that empties the active bin moves its price.
@pytest.mark.parametrize(("venue", "amount_in"), [("raydium", 2 * SOL), ("meteora", 300 * SOL)])
def test_a_signed_swap_confirms_and_moves_balances_and_the_pool(venue: str,
                                                                amount_in: int) -> None:
    chain = make_chain()
    wallet = funded_wallet(chain)
    price_before = chain.spot_price(venue, "SOL", "USDC")
    tx, quoted, _ = signed_swap(chain, wallet, venue=venue, amount_in=amount_in)

    signature = chain.send_transaction(tx, T0, land_delay_s=0.0)

    status = only(chain.signature_statuses([signature], T0))
    assert status.confirmed
    assert status.error is None and status.error_code is None
    assert status.amount_out == quoted  # nothing moved between quote and landing
    assert status.block_height == chain.block_height(T0)
    assert balances(chain, wallet) == (1_000 * SOL - amount_in, 100_000 * USDC + quoted)
    # Selling SOL into the pool makes SOL cheaper there.
    assert chain.spot_price(venue, "SOL", "USDC") < price_before
    assert chain.executed_swaps([signature]) == 1


def test_the_reverse_direction_pays_the_other_token() -> None:
    chain = make_chain()
    wallet = funded_wallet(chain)
    tx, quoted, _ = signed_swap(chain, wallet, sell="USDC", buy="SOL",
                                amount_in=300 * USDC)

    signature = chain.send_transaction(tx, T0, 0.0)

    assert only(chain.signature_statuses([signature], T0)).confirmed
    assert balances(chain, wallet) == (1_000 * SOL + quoted, 99_700 * USDC)
    assert 1.9 * SOL < quoted < 2.1 * SOL


def test_a_delayed_swap_is_unknown_until_it_lands() -> None:
    chain = make_chain()
    wallet = funded_wallet(chain)
    tx, _, _ = signed_swap(chain, wallet)

    signature = chain.send_transaction(tx, T0, land_delay_s=2.0)

    assert chain.signature_statuses([signature], T0 + 1.0) == [None]
    assert balances(chain, wallet)[0] == 1_000 * SOL
    status = only(chain.signature_statuses([signature], T0 + 2.0))
    assert status.confirmed
    assert status.block_height == chain.block_height(T0 + 2.0)


def test_the_transaction_decodes_to_the_swap_that_was_signed() -> None:
    chain = make_chain()
    wallet = funded_wallet(chain)
    tx, _, min_out = signed_swap(chain, wallet, amount_in=3 * SOL)

    swap = decode_swap(Transaction.from_bytes(tx))

    assert swap.owner == str(wallet.pubkey())
    assert swap.amount_in == 3 * SOL
    assert swap.min_amount_out == min_out
    assert swap.x_to_y is True


# --- exactly once -----------------------------------------------------------------------------


def test_sending_the_same_bytes_twice_executes_once() -> None:
    chain = make_chain()
    wallet = funded_wallet(chain)
    tx, quoted, _ = signed_swap(chain, wallet)

    first = chain.send_transaction(tx, T0, 0.0)
    second = chain.send_transaction(tx, T0 + 0.5, 0.0)
    third = chain.send_transaction(tx, T0 + 1.0, 1.0)

    assert first == second == third
    chain.signature_statuses([first], T0 + 10)
    assert balances(chain, wallet) == (999 * SOL, 100_000 * USDC + quoted)
    assert chain.executed_swaps([first]) == 1


def test_a_resend_before_landing_still_executes_once() -> None:
    chain = make_chain()
    wallet = funded_wallet(chain)
    tx, _, _ = signed_swap(chain, wallet)

    signature = chain.send_transaction(tx, T0, 1.0)
    chain.send_transaction(tx, T0 + 0.2, 0.0)  # resent with no delay while still in flight

    assert chain.signature_statuses([signature], T0 + 5) != [None]
    assert balances(chain, wallet)[0] == 999 * SOL


def test_two_orders_with_identical_swaps_get_distinct_signatures() -> None:
    chain = make_chain()
    wallet = funded_wallet(chain)
    quote = chain.quote("raydium", "SOL", "USDC", SOL, T0)
    blockhash, _ = chain.latest_blockhash(T0)
    one = build_swap_transaction(wallet, quote.pool, SOL, 0, quote.x_to_y, blockhash,
                                 memo="dexec:a:1")
    two = build_swap_transaction(wallet, quote.pool, SOL, 0, quote.x_to_y, blockhash,
                                 memo="dexec:b:1")

    sig_one = chain.send_transaction(bytes(one), T0, 0.0)
    sig_two = chain.send_transaction(bytes(two), T0, 0.0)

    assert sig_one != sig_two
    assert chain.executed_swaps([sig_one, sig_two]) == 2
    assert balances(chain, wallet)[0] == 998 * SOL


# --- refused transactions ---------------------------------------------------------------------


def test_a_tampered_signature_is_rejected() -> None:
    chain = make_chain()
    wallet = funded_wallet(chain)
    tx, _, _ = signed_swap(chain, wallet)
    tampered = bytearray(tx)
    tampered[1] ^= 0xFF  # first byte of the signature (after the signature count)

    with pytest.raises(InvalidInput, match="transaction rejected"):
        chain.send_transaction(bytes(tampered), T0, 0.0)
    assert balances(chain, wallet)[0] == 1_000 * SOL


def test_a_tampered_message_is_rejected() -> None:
    chain = make_chain()
    wallet = funded_wallet(chain)
    tx, _, _ = signed_swap(chain, wallet, min_out=1)
    tampered = bytearray(tx)
    tampered[-2] ^= 0x01  # inside the swap data: the signature no longer matches

    with pytest.raises(InvalidInput):
        chain.send_transaction(bytes(tampered), T0, 0.0)


def test_garbage_bytes_are_rejected() -> None:
    with pytest.raises(InvalidInput):
        make_chain().send_transaction(b"\x01not a transaction", T0, 0.0)


def test_an_expired_blockhash_is_refused() -> None:
    chain = make_chain()
    wallet = funded_wallet(chain)
    tx, _, _ = signed_swap(chain, wallet, now=T0)

    with pytest.raises(BlockhashExpired):
        chain.send_transaction(tx, T0 + 3_600, 0.0)
    # The last valid block is still fine; one block later is not.
    just_valid = T0 + VALID_BLOCKS * BLOCK_TIME_S + 0.01
    too_late = T0 + (VALID_BLOCKS + 1) * BLOCK_TIME_S + 0.01
    chain_two = make_chain()
    wallet_two = funded_wallet(chain_two)
    tx_two, _, _ = signed_swap(chain_two, wallet_two, now=T0)
    with pytest.raises(BlockhashExpired):
        chain_two.send_transaction(tx_two, too_late, 0.0)
    signature = chain_two.send_transaction(tx_two, just_valid, 0.0)
    assert only(chain_two.signature_statuses([signature], just_valid)).confirmed


def test_latest_blockhash_reports_its_last_valid_height() -> None:
    chain = make_chain()
    _, last_valid = chain.latest_blockhash(T0 + 10 * BLOCK_TIME_S)
    assert last_valid == chain.block_height(T0 + 10 * BLOCK_TIME_S) + VALID_BLOCKS
    assert chain.block_height(T0 + 10 * BLOCK_TIME_S) == chain.block_height(T0) + 10


def test_an_unknown_blockhash_is_refused() -> None:
    chain = make_chain()
    wallet = funded_wallet(chain)
    quote = chain.quote("raydium", "SOL", "USDC", SOL, T0)
    tx = build_swap_transaction(wallet, quote.pool, SOL, 0, quote.x_to_y,
                                str(Hash.new_unique()), memo="m")

    with pytest.raises(BlockhashExpired, match="not found"):
        chain.send_transaction(bytes(tx), T0, 0.0)


def test_a_transaction_landing_after_its_last_valid_height_is_dropped() -> None:
    chain = make_chain()
    wallet = funded_wallet(chain)
    tx, _, _ = signed_swap(chain, wallet)
    late = (VALID_BLOCKS + 10) * BLOCK_TIME_S

    signature = chain.send_transaction(tx, T0, land_delay_s=late)

    for now in (T0 + 1, T0 + late, T0 + late + 60, T0 + 86_400):
        assert chain.signature_statuses([signature], now) == [None]
    assert balances(chain, wallet) == (1_000 * SOL, 100_000 * USDC)
    assert chain.executed_swaps([signature]) == 0
    # Sending the same bytes again cannot revive it.
    chain.send_transaction(tx, T0 + 1, 0.0)
    assert chain.signature_statuses([signature], T0 + 86_400) == [None]
    assert balances(chain, wallet)[0] == 1_000 * SOL


# --- failed swaps land with their error and change nothing -----------------------------------


def test_min_amount_out_above_what_the_pool_pays_fails_with_slippage_exceeded() -> None:
    chain = make_chain()
    wallet = funded_wallet(chain)
    price_before = chain.spot_price("raydium", "SOL", "USDC")
    quoted = chain.quote("raydium", "SOL", "USDC", SOL, T0).amount_out
    tx, _, _ = signed_swap(chain, wallet, min_out=quoted + 1)

    signature = chain.send_transaction(tx, T0, 0.0)

    status = only(chain.signature_statuses([signature], T0))
    assert not status.confirmed
    assert status.error_code == "slippage_exceeded"
    assert status.error is not None and "slippage exceeded" in status.error
    assert status.amount_out == 0
    assert chain.spot_price("raydium", "SOL", "USDC") == price_before
    assert chain.quote("raydium", "SOL", "USDC", SOL, T0).amount_out == quoted
    assert balances(chain, wallet) == (1_000 * SOL, 100_000 * USDC)
    assert chain.executed_swaps([signature]) == 0


class Landed(NamedTuple):
    status: TxStatus
    quoted: int
    min_out: int
    balances: tuple[int, int]  # the wallet's (SOL, USDC) afterwards


def swap_after_a_move(*, move_bps: int, slippage_bps: int) -> Landed:
    """Quote and sign a 1 SOL swap from a funded wallet with `slippage_bps`; the pool moves
    `move_bps` against it before it lands."""
    chain = make_chain()
    chain.adverse_move_bps = move_bps
    wallet = funded_wallet(chain)
    tx, quoted, min_out = signed_swap(chain, wallet, slippage_bps=slippage_bps)

    signature = chain.send_transaction(tx, T0, 0.0)

    status = only(chain.signature_statuses([signature], T0))
    return Landed(status, quoted, min_out, balances(chain, wallet))


def test_exactly_the_quoted_amount_as_minimum_still_fills() -> None:
    landed = swap_after_a_move(move_bps=0, slippage_bps=0)
    assert landed.status.confirmed
    assert landed.status.amount_out == landed.quoted


def test_an_adverse_move_makes_a_tight_slippage_swap_fail() -> None:
    landed = swap_after_a_move(move_bps=100, slippage_bps=10)
    assert not landed.status.confirmed
    assert landed.status.error_code == "slippage_exceeded"
    assert landed.balances == (1_000 * SOL, 100_000 * USDC)


def test_an_adverse_move_within_a_wide_slippage_fills_for_less() -> None:
    landed = swap_after_a_move(move_bps=100, slippage_bps=500)
    assert landed.status.confirmed
    assert landed.min_out <= landed.status.amount_out < landed.quoted * (10_000 - 50) // 10_000


def test_an_unfunded_wallet_fails_with_insufficient_funds() -> None:
    chain = make_chain()
    wallet = Keypair.from_seed(bytes([9]) * 32)  # never funded
    price_before = chain.spot_price("meteora", "SOL", "USDC")
    tx, _, _ = signed_swap(chain, wallet, venue="meteora")

    signature = chain.send_transaction(tx, T0, 0.0)

    status = only(chain.signature_statuses([signature], T0))
    assert not status.confirmed
    assert status.error_code == "insufficient_funds"
    assert chain.spot_price("meteora", "SOL", "USDC") == price_before
    assert balances(chain, wallet) == (0, 0)


def test_a_wallet_short_by_one_unit_fails_too() -> None:
    chain = make_chain()
    wallet = Keypair.from_seed(bytes([8]) * 32)
    chain.fund(str(wallet.pubkey()), {"SOL": SOL - 1})
    tx, _, _ = signed_swap(chain, wallet, amount_in=SOL)

    signature = chain.send_transaction(tx, T0, 0.0)

    assert only(chain.signature_statuses([signature], T0)).error_code == "insufficient_funds"
    assert balances(chain, wallet)[0] == SOL - 1


def test_an_unknown_signature_has_no_status() -> None:
    chain = make_chain()
    stranger = str(Keypair.from_seed(bytes([3]) * 32).sign_message(b"never sent"))
    assert chain.signature_statuses([stranger], T0) == [None]
    assert chain.executed_swaps([stranger]) == 0


def test_an_unknown_pair_has_no_route() -> None:
    with pytest.raises(NoRoute):
        make_chain().quote("raydium", "SOL", "BONK", SOL, T0)


# --- signatures -------------------------------------------------------------------------------


def test_signatures_are_base58_of_64_bytes() -> None:
    chain = make_chain()
    wallet = funded_wallet(chain)
    signatures = []
    for n in range(5):
        tx, _, _ = signed_swap(chain, wallet, amount_in=SOL // 10, memo=f"order-{n}:1")
        signatures.append(chain.send_transaction(tx, T0, 0.0))

    assert len(set(signatures)) == 5
    for signature in signatures:
        assert 87 <= len(signature) <= 88
        parsed = Signature.from_string(signature)
        assert len(bytes(parsed)) == 64
        assert str(parsed) == signature


# --- drift ------------------------------------------------------------------------------------


def test_drift_moves_prices_but_keeps_the_venues_close() -> None:
    chain = make_chain(seed=11)
    pairs = [(x, y) for x, y, *_ in PAIRS]

    def prices() -> dict[tuple[str, str, str], Decimal]:
        return {(v, x, y): chain.spot_price(v, x, y)
                for v in ("raydium", "meteora") for x, y in pairs}

    start = prices()
    for tick in range(12):
        chain.drift(T0 + tick, Decimal(20))
    end = prices()

    moved = [key for key in start if abs(end[key] / start[key] - 1) > Decimal("0.0005")]
    assert moved, "twelve ticks of 20 bps drift moved no pool"
    for x, y in pairs:
        gap = abs(end[("raydium", x, y)] / end[("meteora", x, y)] - 1)
        assert gap < Decimal("0.06"), f"{x}/{y} venues {gap:.2%} apart"
