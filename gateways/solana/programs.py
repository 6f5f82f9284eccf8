"""The venue programs as a ChainVenue uses them: which accounts to read, the price, the swap."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction

from solders.instruction import Instruction
from solders.pubkey import Pubkey

from core.errors import InsufficientLiquidity, NoRoute
from gateways.solana import cpmm
from gateways.solana.venue import Accounts, NeedAccounts, PoolQuote


class CpmmProgram:
    """Raydium CPMM: read the pool, its two vaults and its config; constant product with fee."""

    def __init__(self, program: Pubkey = cpmm.PROGRAM_ID) -> None:
        self._program = program

    def accounts(self, pool: Pubkey, last: Accounts | None) -> list[Pubkey]:
        if last is None or last[1][0] is None:
            return [pool]
        state = cpmm.PoolState.decode(last[1][0])
        return [pool, state.token_0_vault, state.token_1_vault, state.amm_config]

    def quote(self, pool: Pubkey, read: Accounts, input_mint: Pubkey,
              amount_in: int) -> PoolQuote:
        keys, data = read
        if data[0] is None:
            raise NoRoute(f"pool {pool} does not exist")
        if len(keys) < 4:
            raise NeedAccounts
        state = cpmm.PoolState.decode(data[0])
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


def _token_amount(data: bytes | None) -> int:
    """An SPL token account's amount (u64 at offset 64)."""
    if data is None or len(data) < 72:
        raise NeedAccounts
    return int.from_bytes(data[64:72], "little")
