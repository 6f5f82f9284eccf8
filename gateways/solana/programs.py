"""The venue programs as a ChainVenue uses them: which accounts to read, the price, the swap."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction

from solders.instruction import Instruction
from solders.pubkey import Pubkey

from core.errors import InsufficientLiquidity, NoRoute
from gateways.solana import cpmm, dlmm
from gateways.solana.venue import Accounts, NeedAccounts, PoolQuote

ARRAYS_EACH_SIDE = 1  # bin arrays read beside the active one (70 bins each)
DECODED_ARRAYS = 256  # bin arrays kept decoded, by content
MAX_ARRAYS_EACH_SIDE = 7  # 15 arrays, 1,050 bins: about what one transaction can name


class CpmmProgram:
    """Raydium CPMM: read the pool, its two vaults and its config; constant product with fee."""

    def __init__(self, program: Pubkey = cpmm.PROGRAM_ID) -> None:
        self._program = program

    def accounts(self, pool: Pubkey, last: Accounts | None) -> list[Pubkey]:
        if last is None or last[1][0] is None:
            return [pool]
        state = cpmm.PoolState.decode(last[1][0])
        return [pool, state.token_0_vault, state.token_1_vault, state.amm_config]

    def quote(self, pool: Pubkey, read: Accounts, input_mint: Pubkey, output_mint: Pubkey,
              amount_in: int) -> PoolQuote:
        keys, data = read
        if data[0] is None:
            raise NoRoute(f"pool {pool} does not exist")
        if len(keys) < 4:
            raise NeedAccounts
        state = cpmm.PoolState.decode(data[0])
        _same_mints(pool, (state.token_0_mint, state.token_1_mint), input_mint, output_mint)
        if None in data[1:] or keys[1:] != [state.token_0_vault, state.token_1_vault,
                                          state.amm_config]:
            raise NeedAccounts
        side = 0 if input_mint == state.token_0_mint else 1
        vaults = [_token_amount(d) for d in data[1:3]]
        reserve_in = vaults[side] - state.owed(side)
        reserve_out = vaults[1 - side] - state.owed(1 - side)
        config = cpmm.AmmConfig.decode(data[3] or b"")
        math = cpmm.swap_out(amount_in, reserve_in, reserve_out, config)
        if math.amount_out <= 0 or math.amount_out >= reserve_out:
            raise InsufficientLiquidity(f"pool {pool} cannot pay out for {amount_in}")
        spot = Fraction(reserve_out, reserve_in)
        ideal = (amount_in - math.trade_fee) * spot
        impact = int((1 - Fraction(math.amount_out) / ideal) * 10_000) if ideal else 0
        return PoolQuote(
            amount_out=math.amount_out, fee=math.trade_fee,
            fee_bps=Decimal(config.trade_fee_rate) / 100, price_impact_bps=max(impact, 0),
            route=json.dumps({"program": "cpmm", "state": data[0].hex()}),
        )

    def swap(self, pool: Pubkey, route: str, wallet: Pubkey, input_mint: Pubkey,
             amount_in: int, min_amount_out: int) -> Instruction:
        state = cpmm.PoolState.decode(bytes.fromhex(json.loads(route)["state"]))
        accounts = cpmm.SwapAccounts.for_pool(pool, state, wallet, input_mint, self._program)
        return cpmm.swap_base_input(accounts, amount_in, min_amount_out, self._program)


def _same_mints(pool: Pubkey, mints: tuple[Pubkey, Pubkey], input_mint: Pubkey,
                output_mint: Pubkey) -> None:
    if set(mints) != {input_mint, output_mint} or input_mint == output_mint:
        raise NoRoute(f"pool {pool} trades {mints[0]}/{mints[1]} on the chain, not this pair")


def _token_amount(data: bytes | None) -> int:
    """An SPL token account's amount (u64 at offset 64)."""
    if data is None or len(data) < 72:
        raise NeedAccounts
    return int.from_bytes(data[64:72], "little")


class DlmmProgram:
    """Meteora DLMM: read the pair and the bin arrays around its active bin; walk the bins."""

    def __init__(self, program: Pubkey = dlmm.PROGRAM_ID,
                 clock: Callable[[], float] = time.time) -> None:
        self._program = program
        self._clock = clock
        self._cache: dict[bytes, dlmm.BinArray] = {}  # by account data, oldest first
        self._span: dict[Pubkey, int] = {}  # per pair, bin arrays read each side if not 1

    def _decoded(self, data: bytes) -> dlmm.BinArray:
        """Decode a bin array once per content: most quotes read arrays no swap has touched."""
        found = self._cache.get(data)
        if found is None:
            if len(self._cache) >= DECODED_ARRAYS:
                self._cache.pop(next(iter(self._cache)))
            found = self._cache[data] = dlmm.BinArray.decode(data)
        return found

    def _arrays_around(self, pool: Pubkey, pair: dlmm.LbPair) -> list[Pubkey]:
        centre = dlmm.bin_array_index(pair.active_id)
        span = self._span.get(pool, ARRAYS_EACH_SIDE)
        return [dlmm.bin_array_address(pool, i, self._program) for i in
                range(centre - span, centre + span + 1)
                if pair.bin_array_bitmap >> (i + dlmm.BITMAP_HALF) & 1]

    def accounts(self, pool: Pubkey, last: Accounts | None) -> list[Pubkey]:
        if last is None or last[1][0] is None:
            return [pool]
        return [pool, *self._arrays_around(pool, dlmm.LbPair.decode(last[1][0]))]

    def quote(self, pool: Pubkey, read: Accounts, input_mint: Pubkey, output_mint: Pubkey,
              amount_in: int) -> PoolQuote:
        keys, data = read
        if data[0] is None:
            raise NoRoute(f"pair {pool} does not exist")
        pair = dlmm.LbPair.decode(data[0])
        _same_mints(pool, (pair.token_x_mint, pair.token_y_mint), input_mint, output_mint)
        if keys[1:] != self._arrays_around(pool, pair):
            raise NeedAccounts  # first read, or the active bin moved to other arrays
        arrays = [self._decoded(d) for d in data[1:] if d is not None]
        swap_for_y = input_mint == pair.token_x_mint
        try:
            result = dlmm.quote(pair, arrays, amount_in, swap_for_y, int(self._clock()))
        except dlmm.DlmmError as exc:
            span = self._span.get(pool, ARRAYS_EACH_SIDE)
            if exc.code == dlmm.BIN_ARRAY_NOT_FOUND and span < MAX_ARRAYS_EACH_SIDE:
                # A large swap walks past the arrays read: read wider (for this pair, on).
                self._span[pool] = min(span * 2 + 1, MAX_ARRAYS_EACH_SIDE)
                raise NeedAccounts from None
            raise InsufficientLiquidity(f"pair {pool}: {exc.message}") from None
        if result.amount_out <= 0:
            raise InsufficientLiquidity(f"pair {pool} pays nothing for {amount_in}")
        price = Fraction(dlmm.price_of(pair.active_id, pair.bin_step), dlmm.Q64)
        spot = price if swap_for_y else 1 / price
        ideal = (amount_in - result.fee) * spot
        impact = int((1 - Fraction(result.amount_out) / ideal) * 10_000) if ideal else 0
        # The arrays the swap walks, and one more in its direction: the price may move on.
        used = sorted({dlmm.bin_array_index(b) for b in result.bins}, reverse=swap_for_y)
        step = -1 if swap_for_y else 1
        walk = [*used, used[-1] + step] if used else []
        addresses = [str(dlmm.bin_array_address(pool, i, self._program)) for i in walk
                     if pair.bin_array_bitmap >> (i + dlmm.BITMAP_HALF) & 1]
        return PoolQuote(
            amount_out=result.amount_out, fee=result.fee,
            fee_bps=Decimal(pair.fee_rate(pair.volatility_accumulator)) / 100_000,
            price_impact_bps=max(impact, 0),
            route=json.dumps({"program": "dlmm", "pair": data[0].hex(), "arrays": addresses}),
        )

    def swap(self, pool: Pubkey, route: str, wallet: Pubkey, input_mint: Pubkey,
             amount_in: int, min_amount_out: int) -> Instruction:
        decoded = json.loads(route)
        pair = dlmm.LbPair.decode(bytes.fromhex(decoded["pair"]))
        accounts = dlmm.SwapAccounts.for_pair(pool, pair, wallet, input_mint, self._program)
        return dlmm.swap_instruction(accounts, amount_in, min_amount_out,
                                     [Pubkey.from_string(a) for a in decoded["arrays"]])
