"""Meteora DLMM wire format and swap math: layouts, PDAs, the instruction, the bin walk."""

from __future__ import annotations

import hashlib
import pickle
import struct
from dataclasses import replace
from decimal import Decimal

import pytest
from solders.pubkey import Pubkey
from solders.token.associated import get_associated_token_address

from gateways.solana import dlmm
from gateways.solana.ids import TOKEN_2022

SOL = Pubkey.from_string("So11111111111111111111111111111111111111112")
USDC = Pubkey.from_string("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v")
USER = Pubkey.from_string("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM")
LB_PAIR = Pubkey.from_string("HTvjzsfX3yU6BUodCjZ5vZkUrAxMDTrBs3CJaq43ashR")
NOW = 1_800_000_000


def key(n: int) -> Pubkey:
    return Pubkey.from_bytes(bytes([n]) * 32)


def one_bin_pool(active_id: int = 0, amount_x: int = 10**9, amount_y: int = 10**9,
                 **params: int) -> tuple[dlmm.LbPair, list[dlmm.BinArray]]:
    """A pair whose only liquidity sits in its active bin; fees 0.25% flat, 5% protocol share."""
    index = dlmm.bin_array_index(active_id)
    bins = [dlmm.EMPTY_BIN] * dlmm.BINS_PER_ARRAY
    bins[active_id - index * dlmm.BINS_PER_ARRAY] = dlmm.Bin(
        amount_x, amount_y, dlmm.price_of(active_id, 25))
    pair = dlmm.LbPair(
        token_x_mint=SOL, token_y_mint=USDC, reserve_x=key(1), reserve_y=key(2), oracle=key(3),
        bin_step=25, active_id=active_id, base_factor=10_000, variable_fee_control=0,
        protocol_share=500, index_reference=active_id, last_update_timestamp=NOW,
        bin_array_bitmap=1 << (index + 512))
    return replace(pair, **params), [dlmm.BinArray(index, LB_PAIR, tuple(bins))]


def sol_usdc(bins_each_side: int = 120, **params: int) -> dlmm.SeededPool:
    """SOL/USDC at 150 USDC, bin step 10: 10 SOL above, 1,500 USDC below, both in the active bin.

    The fee parameters are pinned here (not left to the defaults) because the expected numbers
    below were computed for exactly these.
    """
    pool = dlmm.seed_pool(SOL, USDC, decimals_x=9, decimals_y=6, price=Decimal(150),
                          bin_step=10, x_per_bin=10 * 10**9, y_per_bin=1_500 * 10**6,
                          bins_each_side=bins_each_side, now_ts=NOW - 40)
    pinned = {"base_factor": 10_000, "filter_period": 30, "decay_period": 600,
              "reduction_factor": 5_000, "variable_fee_control": 40_000,
              "max_volatility_accumulator": 350_000, "protocol_share": 500, **params}
    return replace(pool, pair=replace(pool.pair, **pinned))


# --- layouts ---------------------------------------------------------------------------------


def test_discriminators_are_the_anchor_hashes() -> None:
    def anchor(name: str) -> bytes:
        return hashlib.sha256(name.encode()).digest()[:8]

    assert anchor("account:LbPair") == dlmm.LB_PAIR_DISCRIMINATOR
    assert anchor("account:BinArray") == dlmm.BIN_ARRAY_DISCRIMINATOR
    assert anchor("global:swap") == dlmm.SWAP == bytes([248, 198, 158, 145, 225, 117, 135, 200])


def test_lb_pair_round_trips_at_the_real_offsets() -> None:
    pair = dlmm.LbPair(
        token_x_mint=SOL, token_y_mint=USDC, reserve_x=key(1), reserve_y=key(2), oracle=key(3),
        bin_step=25, active_id=-25_369, base_factor=8_000, filter_period=10, decay_period=120,
        reduction_factor=5_000, variable_fee_control=2_000_000,
        max_volatility_accumulator=100_000, min_bin_id=-17_000, max_bin_id=17_000,
        protocol_share=1_000, base_fee_power_factor=1, collect_fee_mode=1,
        volatility_accumulator=4_614, volatility_reference=2_307, index_reference=-25_370,
        last_update_timestamp=NOW, status=1, protocol_fee_x=502_327_132,
        protocol_fee_y=21_337_446, bin_array_bitmap=(1 << 1023) | 1, token_y_program_flag=1)
    data = pair.encode()

    assert len(data) == dlmm.LB_PAIR_LEN == 904
    assert data[:8] == dlmm.LB_PAIR_DISCRIMINATOR
    assert struct.unpack_from("<4H2I2iHB", data, 8) == (
        8_000, 10, 120, 5_000, 2_000_000, 100_000, -17_000, 17_000, 1_000, 1)
    assert data[36] == 1  # collect_fee_mode
    assert struct.unpack_from("<IIi", data, 40) == (4_614, 2_307, -25_370)
    assert struct.unpack_from("<q", data, 56) == (NOW,)
    assert struct.unpack_from("<i", data, 76) == (-25_369,)
    assert struct.unpack_from("<HB", data, 80) == (25, 1)
    assert data[88:120] == bytes(SOL) and data[120:152] == bytes(USDC)
    assert data[152:184] == bytes(key(1)) and data[184:216] == bytes(key(2))
    assert struct.unpack_from("<2Q", data, 216) == (502_327_132, 21_337_446)
    assert data[552:584] == bytes(key(3))
    assert data[584] == 1 and data[711] == 0x80  # bin_array_bitmap, [u64; 16] little-endian
    assert data[880:882] == b"\x00\x01"
    assert dlmm.LbPair.decode(data) == pair


def test_lb_pair_keeps_the_fields_it_does_not_model() -> None:
    pair, _ = one_bin_pool()
    data = bytearray(pair.encode())
    data[264:552] = bytes(range(256)) + bytes(32)  # reward_infos
    data[848:880] = bytes(key(9))  # creator
    moved = replace(dlmm.LbPair.decode(bytes(data)), active_id=7)
    again = moved.encode()

    assert again[264:552] == data[264:552] and again[848:880] == bytes(key(9))
    assert struct.unpack_from("<i", again, 76) == (7,)
    with pytest.raises(ValueError, match="LbPair"):
        dlmm.LbPair.decode(bytes(data[:-1]))


def test_bin_array_round_trips_at_the_real_offsets() -> None:
    bins = [dlmm.Bin(k, 2 * k, dlmm.price_of(-140 + k, 10), k << 64) for k in range(70)]
    array = dlmm.BinArray(-2, LB_PAIR, tuple(bins))
    data = array.encode()

    assert len(data) == dlmm.BIN_ARRAY_LEN == 10_136
    assert data[:8] == dlmm.BIN_ARRAY_DISCRIMINATOR
    assert struct.unpack_from("<qB", data, 8) == (-2, 1)
    assert data[24:56] == bytes(LB_PAIR)
    at = 56 + 5 * 144  # bin 5 of 70, 144 bytes each
    assert struct.unpack_from("<2Q", data, at) == (5, 10)
    assert int.from_bytes(data[at + 16:at + 32], "little") == dlmm.price_of(-135, 10)
    assert int.from_bytes(data[at + 32:at + 48], "little") == 5 << 64
    assert dlmm.BinArray.decode(data) == array
    assert array.bin(-135) == bins[5]


def test_bin_keeps_its_limit_order_bytes() -> None:
    raw = bytes(range(144))
    bin_ = dlmm.Bin.decode(raw)
    assert replace(bin_, amount_x=1).encode()[48:] == raw[48:]


def test_bin_array_index_floors_negative_ids() -> None:
    assert [dlmm.bin_array_index(i) for i in (0, 69, 70, -1, -70, -71, -25_369)] == [
        0, 0, 1, -1, -1, -2, -363]


def test_pdas_use_the_program_seeds() -> None:
    def pda(*seeds: bytes) -> Pubkey:
        return Pubkey.find_program_address(list(seeds), dlmm.PROGRAM_ID)[0]

    assert dlmm.bin_array_address(LB_PAIR, -1) == pda(b"bin_array", bytes(LB_PAIR), b"\xff" * 8)
    assert dlmm.bin_array_address(LB_PAIR, 3) == pda(
        b"bin_array", bytes(LB_PAIR), (3).to_bytes(8, "little"))
    assert dlmm.event_authority() == pda(b"__event_authority")
    assert dlmm.reserve_address(LB_PAIR, SOL) == pda(bytes(LB_PAIR), bytes(SOL))
    assert dlmm.oracle_address(LB_PAIR) == pda(b"oracle", bytes(LB_PAIR))
    assert dlmm.lb_pair_address(USDC, SOL, 10, 10_000) == dlmm.lb_pair_address(
        SOL, USDC, 10, 10_000)


def test_bin_prices_match_the_program() -> None:
    assert dlmm.price_of(0, 25) == 1 << 64
    # The program inverts the base, squares by bit of the exponent in Q64.64, inverts back.
    inverse = dlmm.U128_MAX // ((1 << 64) + (25 << 64) // 10_000)
    assert dlmm.price_of(1, 25) == dlmm.U128_MAX // inverse
    assert dlmm.price_of(2, 25) == dlmm.U128_MAX // (inverse * inverse >> 64)
    assert dlmm.price_of(-2, 25) == inverse * inverse >> 64
    # Stored on chain in the SOL/USDC pool HTvjzsfX...ashR (bin step 1), as captured in the
    # meteora-dlmm 0.5 fixture.
    assert dlmm.price_of(-25_369, 1) == 1_459_530_368_389_230_837
    assert dlmm.price_of(-28_600, 1) == 1_056_573_233_135_152_717
    approx = Decimal("1.0025") ** 400 * 2**64
    assert abs(Decimal(dlmm.price_of(400, 25)) / approx - 1) < Decimal("1e-12")


# --- fees and the bin walk -------------------------------------------------------------------


def test_fee_rate_follows_the_formula() -> None:
    pair, _ = one_bin_pool()
    assert pair.fee_rate(0) == 2_500_000  # base_factor 10000 x bin step 25: 0.25% of 1e9
    varied = replace(pair, bin_step=10, base_factor=10_000, variable_fee_control=40_000)
    assert varied.fee_rate(15_000) == 1_000_000 + 9_000  # (15000*10)^2 * 40000 / 1e11
    assert varied.fee_rate(15_001) == 1_000_000 + 9_002  # 9001.2 rounds up
    assert replace(varied, base_fee_power_factor=1).fee_rate(0) == 10_000_000
    assert varied.fee_rate(10**7) == dlmm.MAX_FEE_RATE


@pytest.mark.parametrize("swap_for_y", [True, False])
def test_small_swap_in_the_active_bin_is_constant_sum_less_fee(swap_for_y: bool) -> None:
    pair, arrays = one_bin_pool()  # price exactly 1
    result = dlmm.quote(pair, arrays, 1_000_000, swap_for_y, NOW)

    assert (result.amount_out, result.fee, result.protocol_fee) == (997_500, 2_500, 125)
    assert result.pair.active_id == 0
    expected = dlmm.Bin(10**9 + 997_500, 10**9 - 997_500, 1 << 64) if swap_for_y else \
        dlmm.Bin(10**9 - 997_500, 10**9 + 997_500, 1 << 64)
    assert result.bins == {0: expected}
    fees = (result.pair.protocol_fee_x, result.pair.protocol_fee_y)
    assert fees == ((125, 0) if swap_for_y else (0, 125))
    assert result.pair.last_update_timestamp == NOW


def test_small_swap_at_a_bin_price_away_from_one() -> None:
    pair, arrays = one_bin_pool(active_id=40)
    price = dlmm.price_of(40, 25)
    sell_y = dlmm.quote(pair, arrays, 1_000_000, False, NOW)
    sell_x = dlmm.quote(pair, arrays, 1_000_000, True, NOW)

    # 997,500 after the 0.25% fee, at 1.0025 ** 40 = 1.10503...: 902,687.97 and 1,102,270.43
    assert sell_y.amount_out == (997_500 << 64) // price == 902_687
    assert sell_x.amount_out == (997_500 * price) >> 64 == 1_102_270


def test_large_swap_crosses_bins_and_moves_the_active_id() -> None:
    pool = sol_usdc(last_update_timestamp=0)  # long idle: the volatility reference is reset
    start = pool.pair.active_id
    sold = dlmm.quote(pool.pair, pool.arrays, 50 * 10**9, True, NOW)  # ~5 bins of 1,500 USDC

    assert sold.pair.active_id == start - 4
    assert [sold.bins[i].amount_y for i in range(start - 3, start + 1)] == [0, 0, 0, 0]
    assert 0 < sold.bins[start - 4].amount_y < 1_500 * 10**6
    assert sold.pair.volatility_accumulator == 4 * 10_000  # four bins from the reference
    assert sold.pair.index_reference == start
    assert 7_450 * 10**6 < sold.amount_out < 7_500 * 10**6

    bought = dlmm.quote(pool.pair, pool.arrays, 15_000 * 10**6, False, NOW)
    assert bought.pair.active_id > start
    assert 99 * 10**9 < bought.amount_out < 100 * 10**9


def test_quotes_equal_meteora_dlmm() -> None:
    # Expected outputs computed by the meteora-dlmm 0.5.0 package (PoolState.from_accounts on
    # these exact encoded accounts, quote(..., timestamp=NOW)); it is not a project dependency.
    pool = sol_usdc(volatility_accumulator=15_000, volatility_reference=5_000)
    pair = replace(pool.pair, index_reference=pool.pair.active_id - 1)
    cases = [(10**9, True, 149_859_905), (50 * 10**9, True, 7_477_800_002),
             (500 * 10**9, True, 72_968_894_714), (15_000 * 10**6, False, 99_432_869_672)]
    for amount, swap_for_y, expected in cases:
        assert dlmm.quote(pair, pool.arrays, amount, swap_for_y, NOW).amount_out == expected

    fee_in_y = replace(pair, collect_fee_mode=1)  # the fee comes off the USDC output
    assert dlmm.quote(fee_in_y, pool.arrays, 50 * 10**9, True, NOW).amount_out == 7_477_784_392
    assert dlmm.quote(fee_in_y, pool.arrays, 500 * 10**9, True, NOW).amount_out == 72_964_235_909


def test_volatility_reference_follows_the_filter_and_decay_periods() -> None:
    pool = sol_usdc(volatility_accumulator=20_000, volatility_reference=1_000)
    start = pool.pair.active_id
    pair = replace(pool.pair, index_reference=start - 2)

    def after(elapsed: int) -> dlmm.LbPair:
        idle = replace(pair, last_update_timestamp=NOW - elapsed)
        return dlmm.quote(idle, pool.arrays, 10**6, True, NOW).pair

    busy = after(10)  # within the filter period: reference kept
    assert (busy.index_reference, busy.volatility_reference) == (start - 2, 1_000)
    assert busy.volatility_accumulator == 1_000 + 2 * 10_000
    decaying = after(100)  # decaying: reference moves here, volatility halves
    assert (decaying.index_reference, decaying.volatility_reference) == (start, 10_000)
    assert decaying.volatility_accumulator == 10_000
    assert after(1_000).volatility_accumulator == 0  # past the decay period


def test_apply_writes_the_new_bins_and_conserves_tokens() -> None:
    pool = sol_usdc()
    result = dlmm.quote(pool.pair, pool.arrays, 200 * 10**9, True, NOW)
    changed = dlmm.apply(pool.arrays, result)
    after = {a.index: a for a in pool.arrays} | {a.index: a for a in changed}

    assert {a.index for a in changed} == {dlmm.bin_array_index(i) for i in result.bins}
    assert all(dlmm.BinArray.decode(a.encode()) == a for a in changed)
    total_x = sum(b.amount_x for a in after.values() for b in a.bins)
    total_y = sum(b.amount_y for a in after.values() for b in a.bins)
    assert total_x == pool.amount_x + 200 * 10**9 - result.fee  # the fee stays in the vault
    assert total_y == pool.amount_y - result.amount_out
    again = dlmm.quote(result.pair, list(after.values()), 10**9, True, NOW + 1)
    assert again.amount_out < 10**9 * 150 // 1_000  # the price has moved down


def test_running_out_of_liquidity_is_6012() -> None:
    pool = sol_usdc(bins_each_side=3)
    for swap_for_y, amount in ((True, 100 * 10**9), (False, 10_000 * 10**6)):
        with pytest.raises(dlmm.DlmmError) as caught:
            dlmm.quote(pool.pair, pool.arrays, amount, swap_for_y, NOW)
        assert caught.value.code == dlmm.INSUFFICIENT_LIQUIDITY == 6012


def test_refusals_carry_the_program_codes() -> None:
    pool = sol_usdc()
    without_active = [a for a in pool.arrays if a.index != dlmm.bin_array_index(
        pool.pair.active_id)]
    with pytest.raises(dlmm.DlmmError) as missing:
        dlmm.quote(pool.pair, without_active, 10**9, True, NOW)
    assert missing.value.code == dlmm.BIN_ARRAY_NOT_FOUND
    with pytest.raises(dlmm.DlmmError) as disabled:
        dlmm.quote(replace(pool.pair, status=1), pool.arrays, 10**9, True, NOW)
    assert disabled.value.code == dlmm.POOL_DISABLED
    with pytest.raises(dlmm.DlmmError) as zero:
        dlmm.quote(pool.pair, pool.arrays, 0, True, NOW)
    assert zero.value.code == dlmm.INVALID_INPUT
    copy = pickle.loads(pickle.dumps(zero.value))  # noqa: S301 - our own bytes
    assert (copy.code, str(copy)) == (dlmm.INVALID_INPUT, str(zero.value))


# --- seeding ---------------------------------------------------------------------------------


def test_seed_pool_builds_a_pool_around_the_price() -> None:
    pool = sol_usdc()
    pair = pool.pair
    ui_price = Decimal(dlmm.price_of(pair.active_id, 10)) / 2**64 * 1_000
    assert abs(ui_price / 150 - 1) < Decimal("0.0005")  # within half a bin step
    assert pool.address == dlmm.lb_pair_address(SOL, USDC, 10, 10_000)
    assert (pair.reserve_x, pair.reserve_y) == (dlmm.reserve_address(pool.address, SOL),
                                                dlmm.reserve_address(pool.address, USDC))
    assert pair.oracle == dlmm.oracle_address(pool.address)
    indexes = [a.index for a in pool.arrays]
    assert pair.bin_array_bitmap == sum(1 << (i + 512) for i in indexes)
    assert all(a.lb_pair == pool.address for a in pool.arrays)
    assert (pool.amount_x, pool.amount_y) == (121 * 10 * 10**9, 121 * 1_500 * 10**6)
    active = next(a for a in pool.arrays if a.index == dlmm.bin_array_index(pair.active_id))
    bin_ = active.bin(pair.active_id)
    assert bin_.liquidity_supply == bin_.price * bin_.amount_x + (bin_.amount_y << 64)
    assert dlmm.LbPair.decode(pair.encode()) == pair
    # ln(0.15 base units) / ln(1.001) = -1898.07: bins -2018..-1778 in arrays -29..-26
    assert pair.active_id == -1_898 and indexes == [-29, -28, -27, -26]
    assert dlmm.bin_arrays_for_swap(pool.address, pair, True) == [
        (-28, pool.array_address(-28)), (-29, pool.array_address(-29))]
    assert [i for i, _ in dlmm.bin_arrays_for_swap(pool.address, pair, False, count=9)] == [
        -28, -27, -26]


# --- the instruction -------------------------------------------------------------------------


def test_swap_instruction_round_trips_with_its_bin_arrays() -> None:
    pool = sol_usdc()
    accounts = dlmm.SwapAccounts.for_pair(pool.address, pool.pair, USER, SOL)
    arrays = [pool.array_address(i) for i, _ in
              dlmm.bin_arrays_for_swap(pool.address, pool.pair, True)]
    ix = dlmm.swap_instruction(accounts, 10**9, 149_000_000, arrays)

    assert ix.program_id == dlmm.PROGRAM_ID
    assert bytes(ix.data) == dlmm.SWAP + struct.pack("<QQ", 10**9, 149_000_000)
    assert len(ix.accounts) == 15 + 2
    assert [m.pubkey for m in ix.accounts[15:]] == arrays
    assert [i for i, m in enumerate(ix.accounts) if m.is_writable] == [0, 2, 3, 4, 5, 8, 15, 16]
    assert [i for i, m in enumerate(ix.accounts) if m.is_signer] == [10]
    assert accounts.user_token_in == get_associated_token_address(USER, SOL)
    assert accounts.user_token_out == get_associated_token_address(USER, USDC)
    assert accounts.bin_array_bitmap_extension == accounts.host_fee_in == dlmm.PROGRAM_ID
    assert accounts.event_authority == dlmm.event_authority()
    assert (accounts.reserve_x, accounts.oracle) == (pool.pair.reserve_x, pool.pair.oracle)

    decoded = dlmm.decode_swap(bytes(ix.data), [m.pubkey for m in ix.accounts])
    assert decoded == (accounts, 10**9, 149_000_000, arrays)
    with pytest.raises(ValueError, match="not a DLMM swap"):
        dlmm.decode_swap(bytes(8) + bytes(ix.data)[8:], [m.pubkey for m in ix.accounts])
    with pytest.raises(ValueError, match="15 accounts"):
        dlmm.decode_swap(bytes(ix.data), [m.pubkey for m in ix.accounts[:14]])


def test_swap_accounts_follow_the_input_mint_and_token_programs() -> None:
    pool = sol_usdc()
    pair = replace(pool.pair, token_y_program_flag=1)
    accounts = dlmm.SwapAccounts.for_pair(pool.address, pair, USER, USDC)
    assert accounts.token_y_program == TOKEN_2022
    assert accounts.user_token_in == get_associated_token_address(
        USER, USDC, TOKEN_2022)
    assert accounts.user_token_out == get_associated_token_address(USER, SOL)
    with_extension = replace(accounts, bin_array_bitmap_extension=key(7), host_fee_in=key(8))
    assert [m.is_writable for m in with_extension.metas()][1::8] == [True, True]
    with pytest.raises(ValueError, match="not a mint"):
        dlmm.SwapAccounts.for_pair(pool.address, pair, USER, key(5))
