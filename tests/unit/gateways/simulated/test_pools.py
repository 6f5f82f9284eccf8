"""Unit tests for the simulated venues' pool math."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateways.simulated.pools import (
    ConstantProductPool,
    DlmmPool,
    InsufficientLiquidity,
    Pool,
    SwapResult,
)

SOL = 10**9  # SOL base units
USDC = 10**6  # USDC base units


def make_cpmm() -> ConstantProductPool:
    # 1,000 SOL against 150,000 USDC: 0.15 USDC base units per SOL base unit.
    return ConstantProductPool("cpmm", "SOL", "USDC", 1_000 * SOL, 150_000 * USDC)


def make_dlmm(**fee_kwargs: Any) -> DlmmPool:
    # Roughly 1 SOL and 150 USDC per bin, 50 bins each side of 0.15 USDC base units per lamport.
    return DlmmPool.around_price(
        "dlmm", "SOL", "USDC", 25, Decimal("0.15"), SOL, 150 * USDC, 50, **fee_kwargs
    )


def make_unit_dlmm(bins: dict[int, tuple[int, int]], **fee_kwargs: Any) -> DlmmPool:
    """Build a bin_step-25 pool whose active bin 0 is priced at exactly 1."""
    return DlmmPool("unit", "X", "Y", 25, 0, bins, **fee_kwargs)


def snapshot(pool: Pool) -> dict[str, object]:
    return copy.deepcopy(vars(pool))


POOLS: list[Callable[[], Pool]] = [make_cpmm, make_dlmm]
POOL_IDS = ["cpmm", "dlmm"]


# --- shared behaviour -----------------------------------------------------------------------


@pytest.mark.parametrize("factory", POOLS, ids=POOL_IDS)
def test_pools_satisfy_protocol(factory: Callable[[], Pool]) -> None:
    assert isinstance(factory(), Pool)


@pytest.mark.parametrize("factory", POOLS, ids=POOL_IDS)
@pytest.mark.parametrize("x_to_y", [True, False])
def test_quote_equals_swap_and_does_not_mutate(factory: Callable[[], Pool], x_to_y: bool) -> None:
    pool = factory()
    amount = 5 * SOL if x_to_y else 700 * USDC
    before = snapshot(pool)
    quoted = pool.quote(amount, x_to_y, now=10.0)
    assert snapshot(pool) == before
    assert pool.quote(amount, x_to_y, now=10.0) == quoted
    swapped = pool.swap(amount, x_to_y, now=10.0)
    assert swapped == quoted
    assert snapshot(pool) != before


@pytest.mark.parametrize("factory", POOLS, ids=POOL_IDS)
@pytest.mark.parametrize("x_to_y", [True, False])
def test_second_swap_sees_the_first(factory: Callable[[], Pool], x_to_y: bool) -> None:
    pool = factory()
    amount = 3 * SOL if x_to_y else 450 * USDC
    first = pool.swap(amount, x_to_y, now=0.0)
    second = pool.swap(amount, x_to_y, now=0.0)
    assert second.amount_out < first.amount_out


@pytest.mark.parametrize("factory", POOLS, ids=POOL_IDS)
def test_round_trip_loses_value_to_fees(factory: Callable[[], Pool]) -> None:
    pool = factory()
    amount = 2 * SOL
    usdc = pool.swap(amount, x_to_y=True, now=0.0).amount_out
    back = pool.swap(usdc, x_to_y=False, now=0.0)
    assert back.fee > 0
    assert back.amount_out < amount


@pytest.mark.parametrize("factory", POOLS, ids=POOL_IDS)
@pytest.mark.parametrize("amount", [0, -1, -SOL])
def test_nonpositive_amount_raises(factory: Callable[[], Pool], amount: int) -> None:
    pool = factory()
    with pytest.raises(ValueError, match="positive"):
        pool.quote(amount, True, now=0.0)
    with pytest.raises(ValueError, match="positive"):
        pool.swap(amount, False, now=0.0)


@pytest.mark.parametrize("factory", POOLS, ids=POOL_IDS)
@pytest.mark.parametrize("x_to_y", [True, False])
def test_larger_swaps_have_larger_price_impact(factory: Callable[[], Pool], x_to_y: bool) -> None:
    pool = factory()
    unit = SOL if x_to_y else 150 * USDC
    impacts = [pool.quote(n * unit, x_to_y, now=0.0).price_impact_bps for n in (1, 5, 20, 40)]
    assert impacts == sorted(impacts)
    assert impacts[-1] > impacts[0]
    assert all(impact >= 0 for impact in impacts)


def test_insufficient_liquidity_pickles() -> None:
    error = InsufficientLiquidity("pool p could not fill 5 of 10")
    restored = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert isinstance(restored, InsufficientLiquidity)
    assert str(restored) == str(error)


# --- constant product -----------------------------------------------------------------------


def test_cpmm_hand_computed_swap() -> None:
    pool = ConstantProductPool("p", "X", "Y", 1_000_000, 2_000_000)
    # fee = ceil(10_000 * 25 / 10_000) = 25; out = 2_000_000 * 9_975 // 1_009_975 = 19_752
    # impact = 1 - (19_752 / 9_975) / 2 = 0.99248% -> 99 bps floored
    result = pool.swap(10_000, x_to_y=True, now=0.0)
    assert result == SwapResult(amount_in=10_000, amount_out=19_752, fee=25, price_impact_bps=99)
    assert (pool.reserve_x, pool.reserve_y) == (1_010_000, 1_980_248)


def test_cpmm_fee_rounds_up_and_output_rounds_down() -> None:
    pool = ConstantProductPool("p", "X", "Y", 3_000, 1_000, fee_bps=25)
    # fee = ceil(1_001 * 25 / 10_000) = ceil(2.5025) = 3; out = 3_000 * 998 // 1_998 = 1_498
    # impact = 1 - (1_498 / 998) / 3 = 49.9666% -> 4_996 bps (floored, not rounded)
    result = pool.quote(1_001, x_to_y=False, now=0.0)
    assert result == SwapResult(1_001, 1_498, 3, 4_996)


def test_cpmm_spot_price_and_fee() -> None:
    pool = make_cpmm()
    assert pool.spot_price() == Decimal("0.15")
    assert pool.fee_bps(now=0.0) == Decimal(25)


def test_cpmm_empty_reserve_raises_insufficient_liquidity() -> None:
    pool = ConstantProductPool("p", "X", "Y", 1_000, 0)
    with pytest.raises(InsufficientLiquidity):
        pool.quote(10, x_to_y=True, now=0.0)
    with pytest.raises(InsufficientLiquidity):
        pool.swap(10, x_to_y=False, now=0.0)
    assert (pool.reserve_x, pool.reserve_y) == (1_000, 0)


@settings(max_examples=200, deadline=None)
@given(
    reserve_x=st.integers(1, 10**18),
    reserve_y=st.integers(1, 10**18),
    fee_bps=st.integers(0, 100),
    swaps=st.lists(st.tuples(st.integers(1, 10**19), st.booleans()), min_size=1, max_size=8),
)
def test_cpmm_output_below_reserve_and_k_never_decreases(
    reserve_x: int, reserve_y: int, fee_bps: int, swaps: list[tuple[int, bool]]
) -> None:
    pool = ConstantProductPool("p", "X", "Y", reserve_x, reserve_y, fee_bps)
    for amount, x_to_y in swaps:
        k_before = pool.reserve_x * pool.reserve_y
        reserve_out = pool.reserve_y if x_to_y else pool.reserve_x
        result = pool.swap(amount, x_to_y, now=0.0)
        assert 0 <= result.amount_out < reserve_out
        assert pool.reserve_x * pool.reserve_y >= k_before


# --- DLMM: prices and layout ----------------------------------------------------------------


@pytest.mark.parametrize("bin_id", [0, 1, -1, 100, -760, 2_000])
def test_dlmm_bin_price_formula(bin_id: int) -> None:
    pool = make_unit_dlmm({0: (0, 1)})
    exact = Fraction(10_025, 10_000) ** bin_id
    relative_error = abs(Fraction(pool.bin_price(bin_id)) - exact) / exact
    assert relative_error < Fraction(1, 10**40)


def test_dlmm_around_price_picks_closest_bin_and_lays_out_liquidity() -> None:
    pool = make_dlmm()
    price = Decimal("0.15")
    with localcontext() as ctx:
        ctx.prec = 50
        distances = {i: abs(pool.bin_price(i) - price) for i in range(-800, -700)}
    assert pool.active_id == min(distances, key=distances.__getitem__) == -760
    assert pool.spot_price() == pool.bin_price(-760)
    assert pool.bins[-760] == (SOL // 2, 75 * USDC)
    assert all(pool.bins[-760 + i] == (SOL, 0) for i in range(1, 51))
    assert all(pool.bins[-760 - i] == (0, 150 * USDC) for i in range(1, 51))
    assert len(pool.bins) == 101


# --- DLMM: swaps ----------------------------------------------------------------------------


def test_dlmm_small_swap_stays_in_active_bin_at_bin_price_minus_fee() -> None:
    pool = make_unit_dlmm({0: (0, 10**9), -1: (0, 10**9)})
    # price 1, fee = ceil(1_000_000 * 0.25%) = 2_500, out = 997_500
    result = pool.swap(1_000_000, x_to_y=True, now=0.0)
    assert result == SwapResult(1_000_000, 997_500, 2_500, 0)
    assert pool.active_id == 0
    assert pool.bins[0] == (997_500, 10**9 - 997_500)
    assert pool.bins[-1] == (0, 10**9)
    assert pool.fees_x == 2_500


def test_dlmm_small_swap_at_non_unit_price() -> None:
    pool = make_dlmm()
    price = Fraction(pool.spot_price())
    amount = SOL // 10  # the active bin holds 75 USDC, about half a SOL's worth
    result = pool.swap(amount, x_to_y=True, now=0.0)
    fee = -(-amount * 25 // 10_000)
    assert result.fee == fee
    assert result.amount_out == int((amount - fee) * price)  # floor
    assert pool.active_id == -760


@pytest.mark.parametrize("x_to_y", [True, False])
def test_dlmm_large_swap_walks_bins_in_the_right_direction(x_to_y: bool) -> None:
    pool = make_dlmm()
    start = pool.active_id
    amount = 10 * SOL if x_to_y else 1_500 * USDC
    result = pool.swap(amount, x_to_y, now=0.0)
    step = -1 if x_to_y else 1
    moved = (pool.active_id - start) * step
    assert moved >= 5
    # Every bin strictly between the start and the new active bin is drained of the output
    # token and now holds the input token instead.
    out_side = 1 if x_to_y else 0
    for bin_id in range(start, pool.active_id, step):
        assert pool.bins[bin_id][out_side] == 0
        assert pool.bins[bin_id][1 - out_side] > 0
    assert pool.bins[pool.active_id][out_side] > 0
    assert result.price_impact_bps > 0


def test_dlmm_insufficient_liquidity_leaves_pool_unchanged() -> None:
    pool = make_unit_dlmm({0: (500, 500), 1: (1_000, 0), -1: (0, 1_000)})
    before = snapshot(pool)
    for x_to_y, amount in ((True, 2_000), (False, 2_000)):
        with pytest.raises(InsufficientLiquidity):
            pool.quote(amount, x_to_y, now=0.0)
        with pytest.raises(InsufficientLiquidity):
            pool.swap(amount, x_to_y, now=0.0)
        assert snapshot(pool) == before
    # The same pool fills a swap that fits.
    assert pool.swap(1_000, x_to_y=True, now=0.0).amount_out > 0


def test_dlmm_drains_everything_with_exact_amount() -> None:
    pool = make_unit_dlmm({0: (0, 1_000), -5: (0, 1_000)})
    # Bin 0 (price 1, fee 0.25%): net ceil(1_000 / 1) = 1_000, fee ceil(1_000 * r / (1 - r)) = 3.
    # Bin -5 (price 1.0025**-5 = 0.98759..., accumulator 50_000 -> fee 0.3125%):
    # net ceil(1_000 / 0.98759...) = 1_013, fee ceil(1_013 * r / (1 - r)) = 4.
    with pytest.raises(InsufficientLiquidity):
        pool.quote(2_021, x_to_y=True, now=0.0)
    result = pool.swap(2_020, x_to_y=True, now=0.0)
    assert (result.amount_out, result.fee) == (2_000, 7)
    assert pool.active_id == -5
    assert pool.bins[0][1] == pool.bins[-5][1] == 0


def test_dlmm_draining_a_bin_charges_the_fee_grossed_up() -> None:
    pool = make_unit_dlmm({0: (0, 10_000)})
    # Draining needs net 10_000 plus a fee of ceil(10_000 * r / (1 - r)) = ceil(25.06) = 26,
    # so that the fee is still ceil(gross * r) of the gross 10_026.
    assert pool.quote(10_026, x_to_y=True, now=0.0) == SwapResult(10_026, 10_000, 26, 0)
    # One less is a partial fill: fee ceil(10_025 * r) = 26, output 9_999.
    assert pool.quote(10_025, x_to_y=True, now=0.0) == SwapResult(10_025, 9_999, 26, 0)
    with pytest.raises(InsufficientLiquidity):
        pool.quote(10_027, x_to_y=True, now=0.0)


# --- DLMM: fees -----------------------------------------------------------------------------


def test_dlmm_base_fee_is_a_quarter_percent() -> None:
    pool = make_dlmm(base_factor=10_000)
    assert pool.base_fee_rate() == 2_500_000  # parts per 1e9
    assert pool.fee_bps(now=0.0) == Decimal(25)
    assert make_dlmm(base_fee_power_factor=1).fee_bps(now=0.0) == Decimal(250)


def test_dlmm_variable_fee_rises_after_big_swap_and_decays() -> None:
    pool = make_dlmm()
    start = pool.active_id
    base_fee = 25 * SOL * 10 // 10_000  # what a 0.25% fee on 10 SOL would be
    result = pool.swap(10 * SOL, x_to_y=True, now=1_000.0)
    crossed = start - pool.active_id
    assert crossed >= 5
    # Bins after the first are charged a rising variable fee.
    assert result.fee > base_fee

    def expected_bps(accumulator: int) -> Decimal:
        variable = -(-((accumulator * 25) ** 2) * 40_000 // 10**11)
        return Decimal(2_500_000 + variable) / 100_000

    within_filter = pool.fee_bps(now=1_010.0)  # references unchanged
    after_filter = pool.fee_bps(now=1_100.0)  # reference halved, index reset
    after_decay = pool.fee_bps(now=1_700.0)  # reference cleared
    assert within_filter == expected_bps(crossed * 10_000)
    assert after_filter == expected_bps(crossed * 10_000 * 5_000 // 10_000)
    assert after_decay == Decimal(25)
    assert within_filter > after_filter > after_decay


def test_dlmm_swaps_within_filter_period_keep_the_index_reference() -> None:
    pool = make_dlmm()
    first = pool.swap(5 * SOL, x_to_y=True, now=0.0)
    # Within the filter period the next swap is measured from the original index, so every
    # bin it touches is charged more than after the references reset.
    soon = pool.quote(5 * SOL, x_to_y=True, now=1.0)
    later = pool.quote(5 * SOL, x_to_y=True, now=10_000.0)
    assert soon.fee > first.fee
    assert soon.fee > later.fee
    assert soon.amount_out < later.amount_out


def test_dlmm_fee_capped_at_ten_percent() -> None:
    assert make_dlmm(base_factor=10**7).fee_bps(now=0.0) == Decimal(1_000)
    pool = make_dlmm(variable_fee_control=10**9)
    pool.swap(10 * SOL, x_to_y=True, now=0.0)
    assert pool.fee_bps(now=1.0) == Decimal(1_000)
    assert pool.fee_rate(pool.max_volatility_accumulator) == 100_000_000


@settings(max_examples=100, deadline=None)
@given(
    swaps=st.lists(
        st.tuples(st.booleans(), st.integers(1, 20 * SOL), st.floats(0, 1_000)),
        min_size=1,
        max_size=10,
    )
)
def test_dlmm_swaps_never_create_tokens(swaps: list[tuple[bool, int, float]]) -> None:
    pool = make_dlmm()
    total_x = sum(x for x, _ in pool.bins.values())
    total_y = sum(y for _, y in pool.bins.values())
    now = 0.0
    for x_to_y, amount, wait in swaps:
        now += wait
        value_before = {i: Fraction(pool.bin_price(i)) * x + y for i, (x, y) in pool.bins.items()}
        try:
            result = pool.swap(amount if x_to_y else amount // 6 + 1, x_to_y, now)
        except InsufficientLiquidity:
            continue
        if x_to_y:
            total_x, total_y = total_x + result.amount_in, total_y - result.amount_out
        else:
            total_y, total_x = total_y + result.amount_in, total_x - result.amount_out
        # Every token is accounted for: in the bins or in the collected fees.
        assert sum(x for x, _ in pool.bins.values()) + pool.fees_x == total_x
        assert sum(y for _, y in pool.bins.values()) + pool.fees_y == total_y
        # No bin loses value at its own price: rounding favours the pool.
        for i, (x, y) in pool.bins.items():
            assert Fraction(pool.bin_price(i)) * x + y >= value_before[i]


@pytest.mark.parametrize("x_to_y", [True, False])
def test_a_dlmm_walk_visits_the_funded_bins_outwards_from_the_active_one(x_to_y: bool) -> None:
    """The walk steps from the active bin outwards, skipping bins without the output token,
    across a gap in the bin ids, and a pool saved and loaded again walks the same way."""
    bins = {0: (10, 10), 1: (10, 0), 3: (10, 0), -1: (0, 10), -4: (0, 10), -2: (0, 0)}
    pool = make_unit_dlmm(bins)
    order = list(pool._walking_order(x_to_y))
    assert order == ([0, -1, -2, -4] if x_to_y else [0, 1, 3])
    # 30 in empties the two bins next to the active one and reaches across the gap.
    walk = pool._walk(30, x_to_y, 0.0)
    assert sorted(walk.bins) == ([-4, -1, 0] if x_to_y else [0, 1, 3])
    quote = pool.quote(30, x_to_y, 0.0)
    assert quote.amount_out == 25
    loaded = pickle.loads(pickle.dumps(pool))  # noqa: S301 - our own bytes
    assert b"_ids" not in pickle.dumps(pool)
    assert loaded.quote(30, x_to_y, 0.0) == quote
    assert loaded.swap(30, x_to_y, 0.0) == pool.swap(30, x_to_y, 0.0) == quote
    with pytest.raises(InsufficientLiquidity):
        loaded.quote(10**6, x_to_y, 0.0)
