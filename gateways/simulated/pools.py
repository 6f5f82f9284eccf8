"""Pool math for the simulated venues: Raydium CPMM and Meteora DLMM, in integer base units.

Rounding always favours the pool: outputs are floored, fees and required inputs are ceiled.
Price impact is floored to whole bps, so a swap that executes at spot (before fees and
rounding) reports 0.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

BPS = 10_000
FEE_PRECISION = 1_000_000_000  # DLMM fee rates are parts per 1e9
MAX_FEE_RATE = 100_000_000  # DLMM total fee cap: 10%
_VARIABLE_FEE_SCALE = 100_000_000_000
_PRECISION = 50
_NEAREST = Context(prec=_PRECISION)
_UP = Context(prec=_PRECISION, rounding=ROUND_CEILING)
_DOWN = Context(prec=_PRECISION, rounding=ROUND_FLOOR)


@dataclass(frozen=True, slots=True)
class SwapResult:
    """Outcome of one swap, all amounts in base units."""

    amount_in: int  # input consumed, fee included
    amount_out: int  # output paid out
    fee: int  # fee charged, in input-token base units
    price_impact_bps: int  # shortfall of out/(in - fee) against spot before the swap, floored


class InsufficientLiquidity(Exception):
    """Raised when the pool cannot fill the whole amount_in."""


@runtime_checkable
class Pool(Protocol):
    """What every simulated venue pool offers."""

    address: str
    token_x: str
    token_y: str

    def spot_price(self) -> Decimal:
        """Return the spot price in Y base units per X base unit."""
        ...

    def quote(self, amount_in: int, x_to_y: bool, now: float) -> SwapResult:
        """Return what swap() would do at now, without changing the pool."""
        ...

    def swap(self, amount_in: int, x_to_y: bool, now: float) -> SwapResult:
        """Execute the swap against the pool's state and return its result."""
        ...

    def fee_bps(self, now: float) -> Decimal:
        """Return the total fee rate a swap at now would start with, in bps."""
        ...


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _ceil(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def _floor(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


def _check_amount(amount_in: int) -> None:
    if amount_in <= 0:
        raise ValueError(f"amount_in must be a positive integer, got {amount_in}")


def _impact_bps(spot_out_per_in: Fraction, amount_out: int, net_in: int) -> int:
    """Return how far out/net_in falls below the spot rate, in whole bps (floored, >= 0)."""
    if amount_out == 0 or net_in == 0:
        return BPS
    shortfall = 1 - Fraction(amount_out, net_in) / spot_out_per_in
    return max(0, math.floor(shortfall * BPS))


class ConstantProductPool:
    """Raydium CPMM: x*y=k, the fee is taken on input and stays in the reserves."""

    def __init__(
        self,
        address: str,
        token_x: str,
        token_y: str,
        reserve_x: int,
        reserve_y: int,
        fee_bps: int = 25,
    ) -> None:
        if reserve_x < 0 or reserve_y < 0:
            raise ValueError("reserves must be non-negative")
        if not 0 <= fee_bps < BPS:
            raise ValueError(f"fee_bps must be in [0, {BPS}), got {fee_bps}")
        self.address = address
        self.token_x = token_x
        self.token_y = token_y
        self.reserve_x = reserve_x
        self.reserve_y = reserve_y
        self._fee_bps = fee_bps

    def spot_price(self) -> Decimal:
        """Return reserve_y / reserve_x."""
        if self.reserve_x == 0:
            raise InsufficientLiquidity(f"pool {self.address} has no {self.token_x}")
        return _NEAREST.divide(Decimal(self.reserve_y), Decimal(self.reserve_x))

    def fee_bps(self, now: float) -> Decimal:
        """Return the fixed fee rate in bps."""
        return Decimal(self._fee_bps)

    def quote(self, amount_in: int, x_to_y: bool, now: float) -> SwapResult:
        """Return the result of swapping amount_in without changing the reserves."""
        _check_amount(amount_in)
        if x_to_y:
            reserve_in, reserve_out = self.reserve_x, self.reserve_y
        else:
            reserve_in, reserve_out = self.reserve_y, self.reserve_x
        if reserve_in == 0 or reserve_out == 0:
            raise InsufficientLiquidity(f"pool {self.address} has an empty reserve")
        fee = _ceil_div(amount_in * self._fee_bps, BPS)
        net_in = amount_in - fee
        amount_out = reserve_out * net_in // (reserve_in + net_in)
        impact = _impact_bps(Fraction(reserve_out, reserve_in), amount_out, net_in)
        return SwapResult(amount_in, amount_out, fee, impact)

    def swap(self, amount_in: int, x_to_y: bool, now: float) -> SwapResult:
        """Swap amount_in, moving the whole input (fee included) into the reserves."""
        result = self.quote(amount_in, x_to_y, now)
        if x_to_y:
            self.reserve_x += result.amount_in
            self.reserve_y -= result.amount_out
        else:
            self.reserve_y += result.amount_in
            self.reserve_x -= result.amount_out
        return result


@lru_cache(maxsize=65_536)
def _bin_price(bin_step: int, bin_id: int) -> Decimal:
    base = _NEAREST.divide(Decimal(BPS + bin_step), Decimal(BPS))
    return _NEAREST.power(base, bin_id)


def _fill_bin(
    amount_left: int, reserve_out: int, price: Decimal, fee_rate: int, x_to_y: bool
) -> tuple[int, int, int]:
    """Swap against one constant-sum bin and return (net input, output, fee)."""
    exact_in = _UP.divide(reserve_out, price) if x_to_y else _UP.multiply(reserve_out, price)
    max_net = _ceil(exact_in)
    # The fee on an amount that excludes fees, grossed up so fee == ceil(gross * rate).
    max_fee = _ceil_div(max_net * fee_rate, FEE_PRECISION - fee_rate)
    if amount_left >= max_net + max_fee:
        return max_net, reserve_out, max_fee
    fee = _ceil_div(amount_left * fee_rate, FEE_PRECISION)
    net = amount_left - fee
    exact_out = _DOWN.multiply(net, price) if x_to_y else _DOWN.divide(net, price)
    return net, min(reserve_out, _floor(exact_out)), fee


@dataclass(frozen=True, slots=True)
class _Walk:
    """A swap worked out against a snapshot: the result and the state it would leave."""

    result: SwapResult
    bins: dict[int, tuple[int, int]]  # only the bins whose amounts changed
    active_id: int
    volatility_accumulator: int
    volatility_reference: int
    index_reference: int


class DlmmPool:
    """Meteora DLMM: constant-sum bins at geometric prices, with a volatility-driven fee."""

    def __init__(
        self,
        address: str,
        token_x: str,
        token_y: str,
        bin_step: int,
        active_id: int,
        bins: dict[int, tuple[int, int]],
        base_factor: int = 10000,
        base_fee_power_factor: int = 0,
        variable_fee_control: int = 40000,
        max_volatility_accumulator: int = 350000,
        filter_period: float = 30.0,
        decay_period: float = 600.0,
        reduction_factor: int = 5000,
    ) -> None:
        if bin_step <= 0:
            raise ValueError(f"bin_step must be positive, got {bin_step}")
        if any(x < 0 or y < 0 for x, y in bins.values()):
            raise ValueError("bin amounts must be non-negative")
        if not 0 <= filter_period <= decay_period:
            raise ValueError("need 0 <= filter_period <= decay_period")
        self.address = address
        self.token_x = token_x
        self.token_y = token_y
        self.bin_step = bin_step
        self.active_id = active_id
        self.bins = dict(bins)
        self._ids = sorted(self.bins)  # the bins' ids in price order, for _walking_order
        self.base_factor = base_factor
        self.base_fee_power_factor = base_fee_power_factor
        self.variable_fee_control = variable_fee_control
        self.max_volatility_accumulator = max_volatility_accumulator
        self.filter_period = filter_period
        self.decay_period = decay_period
        self.reduction_factor = reduction_factor
        self.volatility_accumulator = 0
        self.volatility_reference = 0
        self.index_reference = active_id
        self.last_update = -math.inf
        # LP fees are claimed separately in Meteora, so they never enter the bins.
        self.fees_x = 0
        self.fees_y = 0

    @classmethod
    def around_price(
        cls,
        address: str,
        token_x: str,
        token_y: str,
        bin_step: int,
        price: Decimal,
        x_per_bin: int,
        y_per_bin: int,
        bins_each_side: int = 100,
        **fee_kwargs: Any,
    ) -> DlmmPool:
        """Build a pool whose active bin is the one priced closest to price."""
        price = Decimal(price)
        if price <= 0:
            raise ValueError(f"price must be positive, got {price}")
        if bin_step <= 0 or bins_each_side < 0:
            raise ValueError("bin_step must be positive and bins_each_side non-negative")
        ratio = _NEAREST.divide(_NEAREST.ln(price), _NEAREST.ln(_bin_price(bin_step, 1)))
        guess = int(ratio.to_integral_value())
        active = min(
            (guess - 1, guess, guess + 1),
            key=lambda i: abs(_NEAREST.subtract(_bin_price(bin_step, i), price)),
        )
        bins = {active: (x_per_bin // 2, y_per_bin // 2)}
        for offset in range(1, bins_each_side + 1):
            bins[active + offset] = (x_per_bin, 0)
            bins[active - offset] = (0, y_per_bin)
        return cls(address, token_x, token_y, bin_step, active, bins, **fee_kwargs)

    def bin_price(self, bin_id: int) -> Decimal:
        """Return (1 + bin_step/10000) ** bin_id in Y base units per X base unit."""
        return _bin_price(self.bin_step, bin_id)

    def spot_price(self) -> Decimal:
        """Return the active bin's price."""
        return self.bin_price(self.active_id)

    def base_fee_rate(self) -> int:
        """Return the base fee rate in parts per 1e9."""
        return self.base_factor * self.bin_step * 10 * int(10**self.base_fee_power_factor)

    def fee_rate(self, volatility_accumulator: int) -> int:
        """Return the capped total fee rate, parts per 1e9, for a volatility accumulator."""
        squared = (volatility_accumulator * self.bin_step) ** 2
        variable = _ceil_div(squared * self.variable_fee_control, _VARIABLE_FEE_SCALE)
        return min(MAX_FEE_RATE, self.base_fee_rate() + variable)

    def fee_bps(self, now: float) -> Decimal:
        """Return the fee rate the active bin would charge a swap starting at now, in bps."""
        reference, index_reference = self._references(now)
        accumulator = self._accumulator(reference, index_reference, self.active_id)
        return _NEAREST.divide(Decimal(self.fee_rate(accumulator)), Decimal(FEE_PRECISION // BPS))

    def quote(self, amount_in: int, x_to_y: bool, now: float) -> SwapResult:
        """Return the result of swapping amount_in at now without changing the pool."""
        return self._walk(amount_in, x_to_y, now).result

    def price_after(self, amount_in: int, x_to_y: bool, now: float) -> Decimal:
        """Return the spot price a swap of amount_in would leave; change nothing."""
        return self.bin_price(self._walk(amount_in, x_to_y, now).active_id)

    def swap(self, amount_in: int, x_to_y: bool, now: float) -> SwapResult:
        """Swap amount_in at now, updating bins, active bin, volatility state and fees."""
        walk = self._walk(amount_in, x_to_y, now)
        self.bins.update(walk.bins)
        self.active_id = walk.active_id
        self.volatility_accumulator = walk.volatility_accumulator
        self.volatility_reference = walk.volatility_reference
        self.index_reference = walk.index_reference
        self.last_update = now
        if x_to_y:
            self.fees_x += walk.result.fee
        else:
            self.fees_y += walk.result.fee
        return walk.result

    def _references(self, now: float) -> tuple[int, int]:
        """Return (volatility_reference, index_reference) as a swap at now would reset them."""
        elapsed = now - self.last_update
        if elapsed < self.filter_period:
            return self.volatility_reference, self.index_reference
        if elapsed < self.decay_period:
            reduced = self.volatility_accumulator * self.reduction_factor // BPS
            return reduced, self.active_id
        return 0, self.active_id

    def _accumulator(self, reference: int, index_reference: int, bin_id: int) -> int:
        crossed = abs(index_reference - bin_id) * BPS
        return min(self.max_volatility_accumulator, reference + crossed)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_ids", None)  # derived from the bins: not saved with every swap
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._ids = sorted(self.bins)

    def _walking_order(self, x_to_y: bool) -> Iterator[int]:
        """The bin ids from the active one outwards in the swap's direction, lazily: a walk
        usually stops within a bin or two, so it never looks at the rest of the pool."""
        ids = self._ids  # bins are only made at creation
        if x_to_y:
            end = bisect.bisect_right(ids, self.active_id)
            return (ids[k] for k in range(end - 1, -1, -1))
        return (ids[k] for k in range(bisect.bisect_left(ids, self.active_id), len(ids)))

    def _walk(self, amount_in: int, x_to_y: bool, now: float) -> _Walk:
        """Work out a swap against the current state without mutating it."""
        _check_amount(amount_in)
        reference, index_reference = self._references(now)
        out_side = 1 if x_to_y else 0  # index of the paid-out token in a bin's (x, y)
        # Bins without the output token change nothing (each accumulator is computed afresh),
        # so the walk visits only bins that can pay out, in walking order.
        funded = (i for i in self._walking_order(x_to_y) if self.bins[i][out_side] > 0)
        amount_left, amount_out, fee = amount_in, 0, 0
        accumulator, active_id = self.volatility_accumulator, self.active_id
        changed: dict[int, tuple[int, int]] = {}
        for bin_id in funded:
            accumulator = self._accumulator(reference, index_reference, bin_id)
            active_id = bin_id
            x, y = self.bins[bin_id]
            net, out, bin_fee = _fill_bin(
                amount_left,
                self.bins[bin_id][out_side],
                self.bin_price(bin_id),
                self.fee_rate(accumulator),
                x_to_y,
            )
            changed[bin_id] = (x + net, y - out) if x_to_y else (x - out, y + net)
            amount_left -= net + bin_fee
            amount_out += out
            fee += bin_fee
            if amount_left == 0:
                break
        if amount_left > 0:
            raise InsufficientLiquidity(
                f"pool {self.address} could not fill {amount_left} of {amount_in}"
            )
        spot = Fraction(self.spot_price())
        impact = _impact_bps(spot if x_to_y else 1 / spot, amount_out, amount_in - fee)
        result = SwapResult(amount_in, amount_out, fee, impact)
        return _Walk(result, changed, active_id, accumulator, reference, index_reference)
