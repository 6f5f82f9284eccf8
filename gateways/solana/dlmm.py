"""Meteora DLMM on the wire: program id, account layouts, the swap instruction and its math.

Written from Meteora's DLMM IDL (lb_clmm 0.12.0, `idls/dlmm.json` in MeteoraAg/dlmm-sdk) and the
SDK's exact-in quote (`commons/src/quote.rs`, `extensions/lb_pair.rs`, `math/u64x64_math.rs`).
`LbPair` (904 bytes) and `BinArray` (10,136 bytes: a 56-byte header and 70 bins of 144) are
packed zero-copy accounts. A swap walks bins from the active one; each bin is a constant-sum
pool at its Q64.64 price (Y base units per X base unit). The fee rate (over 1e9) is recomputed
per bin as the volatility accumulator grows, is taken off the input (or off the output when
`collect_fee_mode` is 1 and the swap sells X), and stays in the reserves: the bins get the
input less any input fee, `protocol_share` of the fee accrues to the pair.

Not modelled: limit orders (their bin fields are kept byte for byte but not traded against, so a
quote over bins with open orders is a lower bound), LP fee growth per bin, host fees, the oracle
account, the bitmap extension (bin arrays outside -512..511), Token-2022 transfer fees. Plain
Python over solders, shared by the engine's gateway (quoting, building) and the local cluster
(playing the program).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from solders.token import ID as TOKEN_PROGRAM
from solders.token.associated import get_associated_token_address

from gateways.solana.ids import TOKEN_2022

PROGRAM_ID = Pubkey.from_string("LBUZKhRxPF3XUpBCjp4YzTKgLccjZhTSDM9YuVaPwxo")

SWAP = bytes([248, 198, 158, 145, 225, 117, 135, 200])
LB_PAIR_DISCRIMINATOR = bytes([33, 11, 49, 98, 181, 101, 177, 13])  # sha256("account:LbPair")
BIN_ARRAY_DISCRIMINATOR = bytes([92, 142, 92, 220, 5, 148, 70, 181])  # sha256("account:BinArray")
LB_PAIR_LEN = 904
BIN_ARRAY_LEN = 10_136
BIN_LEN = 144
BIN_ARRAY_HEADER_LEN = 56
BINS_PER_ARRAY = 70
SWAP_ACCOUNTS = 15

Q64 = 1 << 64
U128_MAX = (1 << 128) - 1
FEE_PRECISION = 1_000_000_000
MAX_FEE_RATE = 100_000_000  # 10%
BASIS_POINT_MAX = 10_000
MIN_BIN_ID, MAX_BIN_ID = -443_636, 443_636
BITMAP_HALF = 512  # LbPair.bin_array_bitmap covers bin array indexes -512..511

# LBError (6000 + variant index)
INVALID_INPUT = 6002
EXCEEDED_AMOUNT_SLIPPAGE = 6003
EXCEEDED_BIN_SLIPPAGE = 6004
BIN_ARRAY_NOT_FOUND = 6009
INVALID_TOKEN_MINT = 6010
INSUFFICIENT_LIQUIDITY = 6012
BITMAP_EXTENSION_NOT_PROVIDED = 6036
POOL_DISABLED = 6042


class DlmmError(Exception):
    """A swap the program would refuse, with its error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"DLMM error {self.code}: {self.message}"


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _get(data: bytes, offset: int, fmt: str) -> Any:
    if fmt == "key":
        return Pubkey.from_bytes(data[offset:offset + 32])
    if fmt == "u128":
        return int.from_bytes(data[offset:offset + 16], "little")
    return struct.unpack_from("<" + fmt, data, offset)[0]


def _put(data: bytearray, offset: int, fmt: str, value: Any) -> None:
    if fmt == "key":
        data[offset:offset + 32] = bytes(value)
    elif fmt == "u128":
        data[offset:offset + 16] = value.to_bytes(16, "little")
    else:
        struct.pack_into("<" + fmt, data, offset, value)


# (field, byte offset in the account, type) for every LbPair field modelled here; offsets from
# the IDL's bytemuck layout after the 8-byte discriminator: StaticParameters at 8,
# VariableParameters at 40, then bump/seeds, active_id at 76, bin_step at 80, ...
LB_PAIR_LAYOUT: tuple[tuple[str, int, str], ...] = (
    ("base_factor", 8, "H"), ("filter_period", 10, "H"), ("decay_period", 12, "H"),
    ("reduction_factor", 14, "H"), ("variable_fee_control", 16, "I"),
    ("max_volatility_accumulator", 20, "I"), ("min_bin_id", 24, "i"), ("max_bin_id", 28, "i"),
    ("protocol_share", 32, "H"), ("base_fee_power_factor", 34, "B"),
    ("collect_fee_mode", 36, "B"), ("volatility_accumulator", 40, "I"),
    ("volatility_reference", 44, "I"), ("index_reference", 48, "i"),
    ("last_update_timestamp", 56, "q"), ("active_id", 76, "i"), ("bin_step", 80, "H"),
    ("status", 82, "B"), ("token_x_mint", 88, "key"), ("token_y_mint", 120, "key"),
    ("reserve_x", 152, "key"), ("reserve_y", 184, "key"), ("protocol_fee_x", 216, "Q"),
    ("protocol_fee_y", 224, "Q"), ("oracle", 552, "key"), ("token_x_program_flag", 880, "B"),
    ("token_y_program_flag", 881, "B"),
)
BITMAP_OFFSET = 584  # bin_array_bitmap: [u64; 16], one little-endian 1024-bit integer
BIN_LAYOUT: tuple[tuple[str, int, str], ...] = (
    ("amount_x", 0, "Q"), ("amount_y", 8, "Q"), ("price", 16, "u128"),
    ("liquidity_supply", 32, "u128"),
)


@dataclass(frozen=True)
class LbPair:
    """The fields of a DLMM `LbPair` that quoting and swapping read or write.

    `raw` keeps the bytes of the account it was decoded from, so that encoding after a swap
    leaves every field this class does not model (rewards, creator, ...) untouched.
    """

    token_x_mint: Pubkey
    token_y_mint: Pubkey
    reserve_x: Pubkey
    reserve_y: Pubkey
    oracle: Pubkey
    bin_step: int
    active_id: int
    base_factor: int = 10_000
    filter_period: int = 30
    decay_period: int = 600
    reduction_factor: int = 5_000
    variable_fee_control: int = 40_000
    max_volatility_accumulator: int = 350_000
    min_bin_id: int = MIN_BIN_ID
    max_bin_id: int = MAX_BIN_ID
    protocol_share: int = 500  # basis points of the fee
    base_fee_power_factor: int = 0
    collect_fee_mode: int = 0  # 0: fee off the input; 1: fee in token Y
    volatility_accumulator: int = 0
    volatility_reference: int = 0
    index_reference: int = 0
    last_update_timestamp: int = 0
    status: int = 0  # 0: enabled
    protocol_fee_x: int = 0
    protocol_fee_y: int = 0
    bin_array_bitmap: int = 0  # bit (index + 512) set: bin array `index` holds liquidity
    token_x_program_flag: int = 0  # 0: SPL Token, 1: Token-2022
    token_y_program_flag: int = 0
    raw: bytes = field(default=b"", repr=False, compare=False)

    def encode(self) -> bytes:
        data = bytearray(self.raw or bytes(LB_PAIR_LEN))
        data[:8] = LB_PAIR_DISCRIMINATOR
        for name, offset, fmt in LB_PAIR_LAYOUT:
            _put(data, offset, fmt, getattr(self, name))
        data[73:75] = self.bin_step.to_bytes(2, "little")  # bin_step_seed
        data[BITMAP_OFFSET:BITMAP_OFFSET + 128] = self.bin_array_bitmap.to_bytes(128, "little")
        return bytes(data)

    @classmethod
    def decode(cls, data: bytes) -> LbPair:
        if len(data) != LB_PAIR_LEN or data[:8] != LB_PAIR_DISCRIMINATOR:
            raise ValueError("not a DLMM LbPair account")
        bitmap = int.from_bytes(data[BITMAP_OFFSET:BITMAP_OFFSET + 128], "little")
        return cls(**{name: _get(data, offset, fmt) for name, offset, fmt in LB_PAIR_LAYOUT},
                   bin_array_bitmap=bitmap, raw=bytes(data))

    def fee_rate(self, volatility_accumulator: int) -> int:
        """Total fee rate over 1e9 at this accumulator: base + variable, capped at 10%."""
        base = self.base_factor * self.bin_step * 10 * int(10 ** self.base_fee_power_factor)
        variable = _ceil_div(
            self.variable_fee_control * (volatility_accumulator * self.bin_step) ** 2,
            100_000_000_000)
        return min(base + variable, MAX_FEE_RATE)

    def token_programs(self) -> tuple[Pubkey, Pubkey]:
        return (TOKEN_2022 if self.token_x_program_flag else TOKEN_PROGRAM,
                TOKEN_2022 if self.token_y_program_flag else TOKEN_PROGRAM)


@dataclass(frozen=True)
class Bin:
    """One bin: market-making amounts, Q64.64 price and Q64.64 liquidity supply.

    `raw` keeps the other fields of a decoded bin (fee growth, limit orders) byte for byte.
    """

    amount_x: int
    amount_y: int
    price: int = 0
    liquidity_supply: int = 0
    raw: bytes = field(default=b"", repr=False, compare=False)

    def encode(self) -> bytes:
        data = bytearray(self.raw or bytes(BIN_LEN))
        for name, offset, fmt in BIN_LAYOUT:
            _put(data, offset, fmt, getattr(self, name))
        return bytes(data)

    @classmethod
    def decode(cls, data: bytes) -> Bin:
        return cls(**{name: _get(data, offset, fmt) for name, offset, fmt in BIN_LAYOUT},
                   raw=bytes(data[:BIN_LEN]))


EMPTY_BIN = Bin(0, 0)


@dataclass(frozen=True)
class BinArray:
    """A `BinArray` account: bins index*70 .. index*70+69 of one pair."""

    index: int
    lb_pair: Pubkey
    bins: tuple[Bin, ...] = (EMPTY_BIN,) * BINS_PER_ARRAY
    version: int = 1

    @property
    def lower_bin_id(self) -> int:
        return self.index * BINS_PER_ARRAY

    def bin(self, bin_id: int) -> Bin:
        return self.bins[bin_id - self.lower_bin_id]

    def encode(self) -> bytes:
        if len(self.bins) != BINS_PER_ARRAY:
            raise ValueError(f"a bin array holds {BINS_PER_ARRAY} bins, not {len(self.bins)}")
        header = BIN_ARRAY_DISCRIMINATOR + struct.pack("<qB7x", self.index, self.version)
        return header + bytes(self.lb_pair) + b"".join(b.encode() for b in self.bins)

    @classmethod
    def decode(cls, data: bytes) -> BinArray:
        if len(data) != BIN_ARRAY_LEN or data[:8] != BIN_ARRAY_DISCRIMINATOR:
            raise ValueError("not a DLMM BinArray account")
        index, version = struct.unpack_from("<qB", data, 8)
        bins = tuple(Bin.decode(data[o:o + BIN_LEN])
                     for o in range(BIN_ARRAY_HEADER_LEN, BIN_ARRAY_LEN, BIN_LEN))
        return cls(index, _get(data, 24, "key"), bins, version)


def bin_array_index(bin_id: int) -> int:
    """The index of the bin array holding `bin_id` (floor division, also for negative ids)."""
    return bin_id // BINS_PER_ARRAY


def _pda(program: Pubkey, *seeds: bytes) -> Pubkey:
    return Pubkey.find_program_address(list(seeds), program)[0]


def bin_array_address(lb_pair: Pubkey, index: int, program: Pubkey = PROGRAM_ID) -> Pubkey:
    """The bin array PDA: seeds ["bin_array", lb_pair, index as i64 LE]."""
    return _pda(program, b"bin_array", bytes(lb_pair), index.to_bytes(8, "little", signed=True))


def event_authority(program: Pubkey = PROGRAM_ID) -> Pubkey:
    """The Anchor event-CPI authority PDA: seeds ["__event_authority"]."""
    return _pda(program, b"__event_authority")


def lb_pair_address(mint_x: Pubkey, mint_y: Pubkey, bin_step: int, base_factor: int,
                    program: Pubkey = PROGRAM_ID) -> Pubkey:
    """A permissionless pair's PDA: seeds [min mint, max mint, bin_step LE, base_factor LE]."""
    low, high = sorted((bytes(mint_x), bytes(mint_y)))
    return _pda(program, low, high, bin_step.to_bytes(2, "little"),
                base_factor.to_bytes(2, "little"))


def reserve_address(lb_pair: Pubkey, mint: Pubkey, program: Pubkey = PROGRAM_ID) -> Pubkey:
    """A pair's vault for `mint`: seeds [lb_pair, mint], owned by the pair itself."""
    return _pda(program, bytes(lb_pair), bytes(mint))


def oracle_address(lb_pair: Pubkey, program: Pubkey = PROGRAM_ID) -> Pubkey:
    """A pair's oracle PDA: seeds ["oracle", lb_pair]."""
    return _pda(program, b"oracle", bytes(lb_pair))


def price_of(bin_id: int, bin_step: int) -> int:
    """The Q64.64 price of a bin, (1 + bin_step/1e4) ** bin_id, rounded as the program does."""
    exponent = abs(bin_id)
    if exponent == 0:
        return Q64
    if exponent >= 0x80000:
        raise DlmmError(INVALID_INPUT, f"bin id {bin_id} is out of range")
    # The program inverts the base (> 1) to keep the squares within 128 bits, then inverts back.
    squared = U128_MAX // (Q64 + (bin_step << 64) // BASIS_POINT_MAX)
    result = Q64
    for bit in range(19):
        if exponent >> bit & 1:
            result = result * squared >> 64
        squared = squared * squared >> 64
    if result == 0:
        raise DlmmError(INVALID_INPUT, f"bin id {bin_id} is out of range")
    return result if bin_id < 0 else U128_MAX // result


@dataclass(frozen=True)
class SwapResult:
    """An exact-in swap as the program would run it, and the state it leaves behind.

    `pair` is the LbPair after the swap (active id, volatility, protocol fees, timestamp);
    `bins` maps every bin the swap traded in to its new state; `apply` writes them into arrays.
    The reserves move by exactly amount_in (in) and amount_out (out): fees stay in the vaults.
    """

    amount_in: int
    amount_out: int
    fee: int
    protocol_fee: int
    pair: LbPair
    bins: dict[int, Bin]


def _next_array_with_liquidity(bitmap: int, start: int, swap_for_y: bool) -> int:
    if not -BITMAP_HALF <= start < BITMAP_HALF:
        raise DlmmError(BITMAP_EXTENSION_NOT_PROVIDED, f"bin array {start} needs the extension")
    indexes = range(start, -BITMAP_HALF - 1, -1) if swap_for_y else range(start, BITMAP_HALF)
    for index in indexes:
        if bitmap >> (index + BITMAP_HALF) & 1:
            return index
    raise DlmmError(INSUFFICIENT_LIQUIDITY, "no bin array with liquidity left")


def quote(pair: LbPair, arrays: Iterable[BinArray], amount_in: int, swap_for_y: bool,
          now_ts: int) -> SwapResult:
    """Swap exactly `amount_in` (X if `swap_for_y`, else Y) through the pair's bins.

    `arrays` are the bin arrays the caller has (order does not matter); which ones hold
    liquidity comes from the pair's bitmap. Raises DlmmError: 6012 when liquidity runs out,
    6009 when the walk needs an array that was not given. Nothing is mutated: the new state is
    in the result (`result.pair`, and `apply` for the arrays).
    """
    if amount_in <= 0:
        raise DlmmError(INVALID_INPUT, "amount_in must be positive")
    if pair.status != 0:
        raise DlmmError(POOL_DISABLED, "the pair is disabled")
    by_index = {a.index: a for a in arrays}
    va, vref, iref = pair.volatility_accumulator, pair.volatility_reference, pair.index_reference
    elapsed = now_ts - pair.last_update_timestamp
    if elapsed >= pair.filter_period:  # not high-frequency: move the reference, decay volatility
        iref = pair.active_id
        vref = va * pair.reduction_factor // BASIS_POINT_MAX if elapsed < pair.decay_period else 0
    fee_on_input = pair.collect_fee_mode == 0 or not swap_for_y
    step = -1 if swap_for_y else 1
    active, remaining = pair.active_id, amount_in
    out_total = fee_total = protocol_total = 0
    touched: dict[int, Bin] = {}
    while remaining > 0:
        index = _next_array_with_liquidity(pair.bin_array_bitmap, bin_array_index(active),
                                           swap_for_y)
        if index != bin_array_index(active):  # skip a gap of empty arrays
            active = index * BINS_PER_ARRAY + (BINS_PER_ARRAY - 1 if swap_for_y else 0)
        array = by_index.get(index)
        if array is None:
            raise DlmmError(BIN_ARRAY_NOT_FOUND, f"bin array {index} was not provided")
        while remaining > 0 and bin_array_index(active) == index:
            bin_ = touched.get(active) or array.bin(active)
            if (bin_.amount_y if swap_for_y else bin_.amount_x) > 0:
                va = min(vref + abs(iref - active) * BASIS_POINT_MAX,
                         pair.max_volatility_accumulator)
                used, out, fee, bin_ = _swap_in_bin(
                    bin_, active, pair, pair.fee_rate(va), remaining, swap_for_y, fee_on_input)
                touched[active] = bin_
                remaining -= used
                out_total += out
                fee_total += fee
                protocol_total += fee * pair.protocol_share // BASIS_POINT_MAX
            if remaining > 0:
                active += step
                if not MIN_BIN_ID <= active <= MAX_BIN_ID:
                    raise DlmmError(INSUFFICIENT_LIQUIDITY, "ran out of bins")
    fee_in_x = swap_for_y and fee_on_input
    new_pair = replace(
        pair, active_id=active, volatility_accumulator=va, volatility_reference=vref,
        index_reference=iref, last_update_timestamp=now_ts,
        protocol_fee_x=pair.protocol_fee_x + (protocol_total if fee_in_x else 0),
        protocol_fee_y=pair.protocol_fee_y + (0 if fee_in_x else protocol_total))
    return SwapResult(amount_in, out_total, fee_total, protocol_total, new_pair, touched)


def _swap_in_bin(bin_: Bin, bin_id: int, pair: LbPair, rate: int, amount: int,
                 swap_for_y: bool, fee_on_input: bool) -> tuple[int, int, int, Bin]:
    """(input used incl. fee, output to the user, fee, new bin), rounded as quote.rs does."""
    price = bin_.price or price_of(bin_id, pair.bin_step)
    reserve = bin_.amount_y if swap_for_y else bin_.amount_x
    fee = _ceil_div(amount * rate, FEE_PRECISION) if fee_on_input else 0
    net = amount - fee
    # Input that buys the whole reserve, rounded up; output rounded down.
    max_in = _ceil_div(reserve << 64, price) if swap_for_y else _ceil_div(reserve * price, Q64)
    if net > max_in:  # the bin is drained: pay for max_in only, fee grossed up on it
        net, out = max_in, reserve
        fee = _ceil_div(max_in * rate, FEE_PRECISION - rate) if fee_on_input else 0
        used = max_in + fee
    else:
        out = min(reserve, (net * price) >> 64 if swap_for_y else (net << 64) // price)
        used = amount
    if not fee_on_input:  # collect_fee_mode 1 selling X: the fee is skimmed off the Y output
        fee = _ceil_div(out * rate, FEE_PRECISION)
    x, y = (bin_.amount_x + net, bin_.amount_y - out) if swap_for_y \
        else (bin_.amount_x - out, bin_.amount_y + net)
    return used, out - (0 if fee_on_input else fee), fee, replace(bin_, amount_x=x, amount_y=y,
                                                                   price=price)


def apply(arrays: Iterable[BinArray], result: SwapResult) -> list[BinArray]:
    """The bin arrays the swap changed, with its new bins written in (write these back)."""
    changed = []
    for array in arrays:
        ids = [i for i in result.bins if bin_array_index(i) == array.index]
        if ids:
            bins = list(array.bins)
            for i in ids:
                bins[i - array.lower_bin_id] = result.bins[i]
            changed.append(replace(array, bins=tuple(bins)))
    return changed


@dataclass(frozen=True)
class SwapAccounts:
    """The 15 accounts of `swap`, in the program's order; absent optionals are the program id."""

    lb_pair: Pubkey
    bin_array_bitmap_extension: Pubkey
    reserve_x: Pubkey
    reserve_y: Pubkey
    user_token_in: Pubkey
    user_token_out: Pubkey
    token_x_mint: Pubkey
    token_y_mint: Pubkey
    oracle: Pubkey
    host_fee_in: Pubkey
    user: Pubkey
    token_x_program: Pubkey
    token_y_program: Pubkey
    event_authority: Pubkey
    program: Pubkey

    @classmethod
    def for_pair(cls, lb_pair: Pubkey, pair: LbPair, user: Pubkey, input_mint: Pubkey,
                 program: Pubkey = PROGRAM_ID) -> SwapAccounts:
        """The accounts to sell `input_mint` into `lb_pair` from `user`'s associated accounts."""
        x_program, y_program = pair.token_programs()
        if input_mint not in (pair.token_x_mint, pair.token_y_mint):
            raise ValueError(f"{input_mint} is not a mint of pair {lb_pair}")
        user_in, user_out = (get_associated_token_address(user, pair.token_x_mint, x_program),
                             get_associated_token_address(user, pair.token_y_mint, y_program))
        if input_mint == pair.token_y_mint:
            user_in, user_out = user_out, user_in
        return cls(
            lb_pair=lb_pair, bin_array_bitmap_extension=program, reserve_x=pair.reserve_x,
            reserve_y=pair.reserve_y, user_token_in=user_in, user_token_out=user_out,
            token_x_mint=pair.token_x_mint, token_y_mint=pair.token_y_mint, oracle=pair.oracle,
            host_fee_in=program, user=user, token_x_program=x_program,
            token_y_program=y_program, event_authority=event_authority(program),
            program=program)

    def keys(self) -> list[Pubkey]:
        return [self.lb_pair, self.bin_array_bitmap_extension, self.reserve_x, self.reserve_y,
                self.user_token_in, self.user_token_out, self.token_x_mint, self.token_y_mint,
                self.oracle, self.host_fee_in, self.user, self.token_x_program,
                self.token_y_program, self.event_authority, self.program]

    def metas(self) -> list[AccountMeta]:
        # The optional accounts are writable when given; the program id standing in is not.
        writable = {0, 2, 3, 4, 5, 8}
        writable |= {i for i in (1, 9) if self.keys()[i] != self.program}
        return [AccountMeta(k, is_signer=i == 10, is_writable=i in writable)
                for i, k in enumerate(self.keys())]


def swap_instruction(accounts: SwapAccounts, amount_in: int, min_amount_out: int,
                     bin_arrays: list[Pubkey]) -> Instruction:
    """The `swap` instruction: sell exactly `amount_in`, receive at least `min_amount_out`."""
    data = SWAP + struct.pack("<QQ", amount_in, min_amount_out)
    metas = accounts.metas() + [AccountMeta(k, is_signer=False, is_writable=True)
                                for k in bin_arrays]
    return Instruction(accounts.program, data, metas)


def decode_swap(data: bytes, keys: list[Pubkey],
                ) -> tuple[SwapAccounts, int, int, list[Pubkey]]:
    """(accounts, amount_in, min_amount_out, bin array keys) of a `swap`, or ValueError."""
    if len(data) != 24 or data[:8] != SWAP:
        raise ValueError("not a DLMM swap instruction")
    if len(keys) < SWAP_ACCOUNTS:
        raise ValueError(f"swap needs {SWAP_ACCOUNTS} accounts, got {len(keys)}")
    amount_in, min_amount_out = struct.unpack_from("<QQ", data, 8)
    return (SwapAccounts(*keys[:SWAP_ACCOUNTS]), amount_in, min_amount_out,
            list(keys[SWAP_ACCOUNTS:]))


def bin_arrays_for_swap(lb_pair: Pubkey, pair: LbPair, swap_for_y: bool, count: int = 3,
                        program: Pubkey = PROGRAM_ID) -> list[tuple[int, Pubkey]]:
    """Up to `count` (index, address) of the bin arrays a swap walks, in walking order."""
    found: list[tuple[int, Pubkey]] = []
    start = bin_array_index(pair.active_id)
    while len(found) < count:
        try:
            index = _next_array_with_liquidity(pair.bin_array_bitmap, start, swap_for_y)
        except DlmmError:
            break
        found.append((index, bin_array_address(lb_pair, index, program)))
        start = index + (-1 if swap_for_y else 1)
    return found


@dataclass(frozen=True)
class SeededPool:
    """A pool built by `seed_pool`: the pair, its bin arrays and what its vaults must hold."""

    address: Pubkey
    pair: LbPair
    arrays: tuple[BinArray, ...]
    amount_x: int
    amount_y: int
    program: Pubkey = PROGRAM_ID

    def array_address(self, index: int) -> Pubkey:
        return bin_array_address(self.address, index, self.program)


def seed_pool(mint_x: Pubkey, mint_y: Pubkey, *, decimals_x: int, decimals_y: int,
              price: Decimal, bin_step: int, x_per_bin: int, y_per_bin: int,
              bins_each_side: int = 120, base_factor: int = 10_000, now_ts: int = 0,
              program: Pubkey = PROGRAM_ID) -> SeededPool:
    """A pair around `price` (UI units of Y per X): X in the bins above, Y below, both in the
    active bin, `bins_each_side` bins each way, at the real program's PDAs."""
    base_price = price * Decimal(10) ** (decimals_y - decimals_x)
    active_id = int((base_price.ln() / (1 + Decimal(bin_step) / BASIS_POINT_MAX).ln())
                    .to_integral_value())
    address = lb_pair_address(mint_x, mint_y, bin_step, base_factor, program)
    bins: dict[int, Bin] = {}
    for bin_id in range(active_id - bins_each_side, active_id + bins_each_side + 1):
        x = x_per_bin if bin_id >= active_id else 0
        y = y_per_bin if bin_id <= active_id else 0
        bin_price = price_of(bin_id, bin_step)  # liquidity is constant-sum, in Q64.64
        bins[bin_id] = Bin(x, y, bin_price, bin_price * x + (y << 64))
    indexes = range(bin_array_index(min(bins)), bin_array_index(max(bins)) + 1)
    if indexes[0] < -BITMAP_HALF or indexes[-1] >= BITMAP_HALF:
        raise ValueError(f"bin arrays {indexes[0]}..{indexes[-1]} need a bitmap extension")
    arrays = tuple(
        BinArray(i, address, tuple(bins.get(i * BINS_PER_ARRAY + k, EMPTY_BIN)
                                   for k in range(BINS_PER_ARRAY)))
        for i in indexes)
    pair = LbPair(
        token_x_mint=mint_x, token_y_mint=mint_y,
        reserve_x=reserve_address(address, mint_x, program),
        reserve_y=reserve_address(address, mint_y, program),
        oracle=oracle_address(address, program), bin_step=bin_step, active_id=active_id,
        base_factor=base_factor, index_reference=active_id, last_update_timestamp=now_ts,
        bin_array_bitmap=sum(1 << (i + BITMAP_HALF) for i in indexes))
    return SeededPool(address, pair, arrays, sum(b.amount_x for b in bins.values()),
                      sum(b.amount_y for b in bins.values()), program)
