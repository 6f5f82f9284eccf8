"""Raydium CPMM on the wire: program ids, account layouts, the swap instruction and its math.

Written from Raydium's CPMM source (raydium-io/raydium-cp-swap): `PoolState` is a packed
zero-copy account (637 bytes with its discriminator), `AmmConfig` a Borsh account; the
`swap_base_input` instruction is discriminator + amount_in u64 + minimum_amount_out u64 with
13 accounts; the trade fee comes off the input (ceil, over 1e6) before the constant product,
and the reserves are the vault balances less the fees the pool owes (protocol, fund, creator).
Plain Python over solders: both the engine's gateway (building) and the local cluster
(playing the program) use it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from solders.token import ID as TOKEN_PROGRAM
from solders.token.associated import get_associated_token_address

PROGRAM_ID = Pubkey.from_string("CPMMoo8L3F4NbTegBCKVNunggL7H1ZpdTHKxQB5qKP1C")
DEVNET_PROGRAM_ID = Pubkey.from_string("DRaycpLY18LhpbydsBWbVJtxpNv9oXPgjRSfpF2bWpYb")

NO_KEY = Pubkey.default()
SWAP_BASE_INPUT = bytes([143, 190, 90, 218, 196, 30, 51, 222])
POOL_STATE_DISCRIMINATOR = bytes([247, 237, 227, 245, 215, 195, 222, 70])
AMM_CONFIG_DISCRIMINATOR = bytes([218, 244, 33, 104, 203, 203, 43, 111])
POOL_STATE_LEN = 637
AMM_CONFIG_LEN = 236
FEE_RATE_DENOMINATOR = 1_000_000
AUTH_SEED = b"vault_and_lp_mint_auth_seed"

# ErrorCode (6000 + variant index)
NOT_APPROVED = 6000
INVALID_INPUT = 6003
EXCEEDED_SLIPPAGE = 6005
ZERO_TRADING_TOKENS = 6006
INVALID_VAULT = 6008
INSUFFICIENT_VAULT = 6012
SWAP_DISABLED_BIT = 4


def authority(program: Pubkey = PROGRAM_ID) -> tuple[Pubkey, int]:
    """The pool authority PDA, owner of every vault: seeds [AUTH_SEED]."""
    return Pubkey.find_program_address([AUTH_SEED], program)


@dataclass(frozen=True)
class PoolState:
    """The fields of a CPMM `PoolState` that quoting and swapping read."""

    amm_config: Pubkey
    token_0_vault: Pubkey
    token_1_vault: Pubkey
    token_0_mint: Pubkey
    token_1_mint: Pubkey
    observation_key: Pubkey
    mint_0_decimals: int
    mint_1_decimals: int
    status: int = 0
    protocol_fees: tuple[int, int] = (0, 0)
    fund_fees: tuple[int, int] = (0, 0)
    creator_fees: tuple[int, int] = (0, 0)
    auth_bump: int = 0
    open_time: int = 0
    token_program: Pubkey = TOKEN_PROGRAM
    lp_mint: Pubkey = NO_KEY
    pool_creator: Pubkey = NO_KEY

    def encode(self) -> bytes:
        keys = (self.amm_config, self.pool_creator, self.token_0_vault, self.token_1_vault,
                self.lp_mint, self.token_0_mint, self.token_1_mint, self.token_program,
                self.token_program, self.observation_key)
        data = POOL_STATE_DISCRIMINATOR + b"".join(bytes(k) for k in keys)
        data += struct.pack("<5B", self.auth_bump, self.status, 9, self.mint_0_decimals,
                            self.mint_1_decimals)
        data += struct.pack("<7Q", 0, *self.protocol_fees, *self.fund_fees, self.open_time, 0)
        data += struct.pack("<BB6x2Q", 0, 0, *self.creator_fees)
        return data + bytes(POOL_STATE_LEN - len(data))

    @classmethod
    def decode(cls, data: bytes) -> PoolState:
        if len(data) < POOL_STATE_LEN or data[:8] != POOL_STATE_DISCRIMINATOR:
            raise ValueError("not a CPMM PoolState account")

        def key(offset: int) -> Pubkey:
            return Pubkey.from_bytes(data[offset:offset + 32])

        auth_bump, status, _lp_dec, dec0, dec1 = struct.unpack_from("<5B", data, 328)
        _lp, p0, p1, f0, f1, open_time, _epoch = struct.unpack_from("<7Q", data, 333)
        c0, c1 = struct.unpack_from("<2Q", data, 397)
        return cls(
            amm_config=key(8), pool_creator=key(40), token_0_vault=key(72),
            token_1_vault=key(104), lp_mint=key(136), token_0_mint=key(168),
            token_1_mint=key(200), token_program=key(232), observation_key=key(296),
            mint_0_decimals=dec0, mint_1_decimals=dec1, status=status,
            protocol_fees=(p0, p1), fund_fees=(f0, f1), creator_fees=(c0, c1),
            auth_bump=auth_bump, open_time=open_time,
        )

    def owed(self, side: int) -> int:
        """Fees the pool holds in its vault of token `side` that are not liquidity."""
        return self.protocol_fees[side] + self.fund_fees[side] + self.creator_fees[side]


@dataclass(frozen=True)
class AmmConfig:
    """The fields of a CPMM `AmmConfig` that the swap reads (rates over 1e6)."""

    trade_fee_rate: int
    protocol_fee_rate: int = 120_000
    fund_fee_rate: int = 40_000
    index: int = 0

    def encode(self) -> bytes:
        data = AMM_CONFIG_DISCRIMINATOR + struct.pack(
            "<B?H4Q", 0, False, self.index, self.trade_fee_rate, self.protocol_fee_rate,
            self.fund_fee_rate, 0)
        return data + bytes(AMM_CONFIG_LEN - len(data))

    @classmethod
    def decode(cls, data: bytes) -> AmmConfig:
        if len(data) < AMM_CONFIG_LEN or data[:8] != AMM_CONFIG_DISCRIMINATOR:
            raise ValueError("not a CPMM AmmConfig account")
        _bump, _disabled, index, trade, protocol, fund, _create = struct.unpack_from(
            "<B?H4Q", data, 8)
        return cls(trade, protocol, fund, index)


@dataclass(frozen=True)
class SwapAccounts:
    """The 13 accounts of `swap_base_input`, in the program's order."""

    payer: Pubkey
    authority: Pubkey
    amm_config: Pubkey
    pool_state: Pubkey
    input_token_account: Pubkey
    output_token_account: Pubkey
    input_vault: Pubkey
    output_vault: Pubkey
    input_token_program: Pubkey
    output_token_program: Pubkey
    input_token_mint: Pubkey
    output_token_mint: Pubkey
    observation_state: Pubkey

    @classmethod
    def for_pool(cls, pool: Pubkey, state: PoolState, payer: Pubkey, input_mint: Pubkey,
                 program: Pubkey = PROGRAM_ID) -> SwapAccounts:
        """The accounts to sell `input_mint` into `pool` from `payer`'s associated accounts."""
        if input_mint == state.token_0_mint:
            vaults, mints = (state.token_0_vault, state.token_1_vault), (
                state.token_0_mint, state.token_1_mint)
        elif input_mint == state.token_1_mint:
            vaults, mints = (state.token_1_vault, state.token_0_vault), (
                state.token_1_mint, state.token_0_mint)
        else:
            raise ValueError(f"{input_mint} is not a mint of pool {pool}")
        return cls(
            payer=payer, authority=authority(program)[0], amm_config=state.amm_config,
            pool_state=pool,
            input_token_account=get_associated_token_address(payer, mints[0]),
            output_token_account=get_associated_token_address(payer, mints[1]),
            input_vault=vaults[0], output_vault=vaults[1],
            input_token_program=state.token_program, output_token_program=state.token_program,
            input_token_mint=mints[0], output_token_mint=mints[1],
            observation_state=state.observation_key,
        )

    def metas(self) -> list[AccountMeta]:
        writable = {3, 4, 5, 6, 7, 12}
        keys = [self.payer, self.authority, self.amm_config, self.pool_state,
                self.input_token_account, self.output_token_account, self.input_vault,
                self.output_vault, self.input_token_program, self.output_token_program,
                self.input_token_mint, self.output_token_mint, self.observation_state]
        return [AccountMeta(k, is_signer=i == 0, is_writable=i in writable)
                for i, k in enumerate(keys)]


def swap_base_input(accounts: SwapAccounts, amount_in: int, minimum_amount_out: int,
                    program: Pubkey = PROGRAM_ID) -> Instruction:
    """The `swap_base_input` instruction: sell exactly `amount_in`, receive at least the min."""
    data = SWAP_BASE_INPUT + struct.pack("<QQ", amount_in, minimum_amount_out)
    return Instruction(program, data, accounts.metas())


def decode_swap_base_input(data: bytes, keys: list[Pubkey]) -> tuple[SwapAccounts, int, int]:
    """(accounts, amount_in, minimum_amount_out) of a `swap_base_input`, or ValueError."""
    if len(data) != 24 or data[:8] != SWAP_BASE_INPUT:
        raise ValueError("not a swap_base_input instruction")
    if len(keys) < 13:
        raise ValueError(f"swap_base_input needs 13 accounts, got {len(keys)}")
    amount_in, minimum_out = struct.unpack_from("<QQ", data, 8)
    return SwapAccounts(*keys[:13]), amount_in, minimum_out


@dataclass(frozen=True)
class SwapMath:
    amount_out: int
    trade_fee: int
    protocol_fee: int
    fund_fee: int


def swap_out(amount_in: int, reserve_in: int, reserve_out: int, config: AmmConfig) -> SwapMath:
    """CPMM `swap_base_input`: fee off the input (rounded up), then x·y = k (rounded down)."""
    fee = -(-amount_in * config.trade_fee_rate // FEE_RATE_DENOMINATOR)
    net = amount_in - fee
    out = net * reserve_out // (reserve_in + net) if net > 0 else 0
    return SwapMath(out, fee, fee * config.protocol_fee_rate // FEE_RATE_DENOMINATOR,
                    fee * config.fund_fee_rate // FEE_RATE_DENOMINATOR)
