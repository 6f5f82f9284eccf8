"""Nothing is signed unchecked: a venue-built transaction, decoded and verified against the order.

A venue's API (Raydium's Trade API) answers with a transaction for the wallet to sign. Before
the wallet signs anything it did not build itself, `verify` checks it instruction by
instruction against what the order allows:

- the fee payer is the wallet and the wallet is the only signer;
- every program is on the allow-list: compute budget, system, SPL Token and Token-2022,
  associated token accounts, memo, and the venue's own programs;
- the only tokens that leave the wallet are the order's input, at most `amount_in`, through
  a swap instruction the verifier can read (Raydium AMM v4, CPMM, CLMM; Meteora DLMM), from the
  wallet's own account into the wallet's own account for the output mint; the swaps' minimum
  out adds up to at least the order's;
- SOL leaves the wallet only as the network fee, a capped priority fee, rent for the wallet's
  own new token accounts, and the wrapped input (at most `amount_in`, into the wallet's own
  wrapped-SOL account);
- nothing hands the wallet's tokens to anyone: no transfer, approval, authority change or
  burn signed by the wallet, and a closed account's lamports go back to the wallet.

Anything it cannot read is refused: an unknown instruction of an allowed program, a
multi-hop route (its middle amount cannot be bounded before it runs), an exact-out swap.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.compute_budget import ID as COMPUTE_BUDGET
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM
from solders.token.associated import get_associated_token_address
from solders.transaction import VersionedTransaction

from core.errors import UnsafeTransaction
from gateways.solana import cpmm, dlmm
from gateways.solana.ids import (
    ATA_PROGRAM,
    MEMO_PROGRAM,
    MEMO_V1,
    NATIVE_MINT,
    TOKEN_2022,
    TOKEN_PROGRAMS,
)

AMM_V4 = Pubkey.from_string("675kPX9MHTjS2zt1qfr1NYHuzeLXfQM9H24wFSUt1Mp8")
CLMM = Pubkey.from_string("CAMMCzo5YL8w4VFF8KVHrK22GGUsp5VTaW7grrKgrWqK")
AMM_V4_DEVNET = Pubkey.from_string("DRaya7Kj3aMWQSy19kSjvmuwq9docCHofyP9kanQGaav")
CLMM_DEVNET = Pubkey.from_string("DRayAUgENGQBKVaX8owNhgzkEDyoHTGVEGHVJT1E9pfH")

RAYDIUM_PROGRAMS = frozenset({AMM_V4, cpmm.PROGRAM_ID, CLMM, AMM_V4_DEVNET, cpmm.DEVNET_PROGRAM_ID,
                              CLMM_DEVNET})
METEORA_PROGRAMS = frozenset({dlmm.PROGRAM_ID})
BASE_PROGRAMS = frozenset({COMPUTE_BUDGET, SYSTEM_PROGRAM, ATA_PROGRAM, MEMO_PROGRAM, MEMO_V1,
                           *TOKEN_PROGRAMS})

TOKEN_ACCOUNT_RENT = 2_039_280  # a 165-byte SPL token account
MAX_TOKEN_ACCOUNT_RENT = 3_000_000  # Token-2022 accounts with extensions are a little larger
DEFAULT_COMPUTE_UNITS = 200_000  # per instruction when no limit is set (the runtime's rule)
MAX_COMPUTE_UNITS = 1_400_000


def _anchor(name: str) -> bytes:
    return hashlib.sha256(f"global:{name}".encode()).digest()[:8]


CLMM_SWAP = _anchor("swap")
CLMM_SWAP_V2 = _anchor("swap_v2")
CPMM_SWAP_BASE_OUTPUT = _anchor("swap_base_output")


@dataclass(frozen=True)
class Expected:
    """What the order allows a transaction to do with the wallet."""

    wallet: Pubkey
    input_mint: Pubkey
    output_mint: Pubkey
    amount_in: int
    min_amount_out: int
    venue_programs: frozenset[Pubkey]
    max_priority_fee_lamports: int = 0


@dataclass(frozen=True)
class SwapLeg:
    """A swap instruction as the verifier reads it."""

    program: Pubkey
    source: Pubkey  # the user's token account it sells from
    destination: Pubkey  # the user's token account it pays into
    owner: Pubkey  # who signs for the source
    amount_in: int
    min_amount_out: int


@dataclass
class _Tally:
    wrapped: int = 0  # lamports the wallet moved into its own wrapped-SOL accounts
    unit_limit: int | None = None
    unit_price: int = 0  # micro-lamports per compute unit
    legs: list[SwapLeg] = field(default_factory=list)
    created: dict[Pubkey, Pubkey] = field(default_factory=dict)  # new token account -> mint
    funded: dict[Pubkey, int] = field(default_factory=dict)  # new account -> lamports given


def _refuse(why: str) -> UnsafeTransaction:
    return UnsafeTransaction(f"refused to sign the venue's transaction: {why}")


# -- decoding ---------------------------------------------------------------------------


def lookup_table(key: Pubkey, data: bytes) -> AddressLookupTableAccount:
    """An address lookup table account's addresses (after its 56-byte header)."""
    body = data[56:]
    if len(data) < 56 or len(body) % 32:
        raise _refuse(f"lookup table {key} is malformed")
    return AddressLookupTableAccount(key, [Pubkey.from_bytes(body[i:i + 32])
                                           for i in range(0, len(body), 32)])


def instructions(tx: VersionedTransaction, tables: Sequence[AddressLookupTableAccount] = (),
                 ) -> tuple[Pubkey, list[Instruction]]:
    """(fee payer, instructions) of a legacy or V0 transaction, lookup tables resolved."""
    message = tx.message
    header = message.header
    keys = list(message.account_keys)
    writable_static = [
        (i < header.num_required_signatures - header.num_readonly_signed_accounts)
        or (header.num_required_signatures <= i
            < len(keys) - header.num_readonly_unsigned_accounts)
        for i in range(len(keys))]
    loaded_w: list[Pubkey] = []
    loaded_r: list[Pubkey] = []
    if isinstance(message, MessageV0):
        by_key = {t.key: t for t in tables}
        for lookup in message.address_table_lookups:
            table = by_key.get(lookup.account_key)
            if table is None:
                raise _refuse(f"lookup table {lookup.account_key} was not read")
            try:
                loaded_w += [table.addresses[i] for i in bytes(lookup.writable_indexes)]
                loaded_r += [table.addresses[i] for i in bytes(lookup.readonly_indexes)]
            except IndexError:
                raise _refuse(f"lookup table {lookup.account_key} has no such index") from None
    all_keys = keys + loaded_w + loaded_r
    writable = writable_static + [True] * len(loaded_w) + [False] * len(loaded_r)
    signers = header.num_required_signatures
    result = []
    for compiled in message.instructions:
        try:
            program = all_keys[compiled.program_id_index]
            metas = [AccountMeta(all_keys[i], i < signers, writable[i])
                     for i in bytes(compiled.accounts)]
        except IndexError:
            raise _refuse("an instruction names an account the message lacks") from None
        result.append(Instruction(program, bytes(compiled.data), metas))
    if not keys:
        raise _refuse("the message has no accounts")
    return keys[0], result


def swap_leg(ix: Instruction) -> SwapLeg:
    """Read a venue swap instruction (exact input only), or refuse it."""
    keys = [m.pubkey for m in ix.accounts]
    data = bytes(ix.data)
    program = ix.program_id
    try:
        if program == dlmm.PROGRAM_ID:
            acc, amount, minimum, _ = dlmm.decode_swap(data, keys)
            return SwapLeg(program, acc.user_token_in, acc.user_token_out, acc.user, amount,
                           minimum)
        if program in (cpmm.PROGRAM_ID, cpmm.DEVNET_PROGRAM_ID):
            if data[:8] == CPMM_SWAP_BASE_OUTPUT:
                raise _refuse("an exact-output swap (swap_base_output)")
            cp, amount, minimum = cpmm.decode_swap_base_input(data, keys)
            return SwapLeg(program, cp.input_token_account, cp.output_token_account,
                           cp.payer, amount, minimum)
        if program in (AMM_V4, AMM_V4_DEVNET):
            # swapBaseIn (9; 17 or 18 accounts) and swapBaseInV2 (16; 8 accounts): the user's
            # source, destination and owner are the last three accounts.
            if len(data) != 17 or data[0] not in (9, 16) or len(keys) < 8:
                raise _refuse("an AMM v4 instruction other than swap base in")
            amount, minimum = struct.unpack_from("<QQ", data, 1)
            return SwapLeg(program, keys[-3], keys[-2], keys[-1], amount, minimum)
        if program in (CLMM, CLMM_DEVNET):
            if data[:8] not in (CLMM_SWAP, CLMM_SWAP_V2) or len(data) < 41 or len(keys) < 8:
                raise _refuse("a CLMM instruction other than swap")
            amount, threshold = struct.unpack_from("<QQ", data, 8)
            if not data[40]:
                raise _refuse("an exact-output swap (CLMM is_base_input false)")
            return SwapLeg(program, keys[3], keys[4], keys[0], amount, threshold)
    except ValueError as exc:
        raise _refuse(f"unreadable swap instruction of {program}: {exc}") from None
    raise _refuse(f"program {program} is no venue swap the verifier knows")


# -- the check --------------------------------------------------------------------------


def verify(payer: Pubkey, ixs: Iterable[Instruction], expected: Expected,
           num_signers: int = 1) -> None:
    """Raise UnsafeTransaction unless the transaction does only what the order allows."""
    me = expected.wallet
    if payer != me:
        raise _refuse(f"the fee payer is {payer}, not the wallet")
    if num_signers != 1:
        raise _refuse(f"it needs {num_signers} signatures; only the wallet signs")
    allowed = BASE_PROGRAMS | expected.venue_programs
    tally = _Tally()
    ixs = list(ixs)
    for ix in ixs:
        program = ix.program_id
        if program not in allowed:
            raise _refuse(f"program {program} is not on the allow-list")
        signer_keys = {m.pubkey for m in ix.accounts if m.is_signer}
        if signer_keys - {me}:
            raise _refuse(f"an instruction of {program} needs another signer")
        if program == COMPUTE_BUDGET:
            _compute_budget(bytes(ix.data), tally)
        elif program == SYSTEM_PROGRAM:
            _system(ix, me, expected, tally)
        elif program in TOKEN_PROGRAMS:
            _token(ix, me, expected, tally)
        elif program == ATA_PROGRAM:
            _associated(ix, me, expected, tally)
        elif program in (MEMO_PROGRAM, MEMO_V1):
            continue
        else:
            tally.legs.append(swap_leg(ix))
    _check_legs(me, expected, tally)
    _check_lamports(expected, tally, len(ixs))


def _compute_budget(data: bytes, tally: _Tally) -> None:
    if len(data) == 5 and data[0] == 2:
        tally.unit_limit = struct.unpack_from("<I", data, 1)[0]
    elif len(data) == 9 and data[0] == 3:
        tally.unit_price = struct.unpack_from("<Q", data, 1)[0]
    elif not (len(data) == 5 and data[0] in (1, 4)):  # heap frame, loaded data size
        raise _refuse("an unknown compute budget instruction")


def _system(ix: Instruction, me: Pubkey, expected: Expected, tally: _Tally) -> None:
    data = bytes(ix.data)
    keys = [m.pubkey for m in ix.accounts]
    tag = struct.unpack_from("<I", data)[0] if len(data) >= 4 else -1
    if tag == 2 and len(data) == 12 and len(keys) >= 2:  # transfer
        lamports = struct.unpack_from("<Q", data, 4)[0]
        if keys[0] != me:
            return  # someone else's lamports: the runtime requires their signature
        if expected.input_mint != NATIVE_MINT or not _wrapped_sol(keys[1], me, tally):
            raise _refuse(f"it transfers {lamports} lamports to {keys[1]}")
        tally.wrapped += lamports
    elif tag in (0, 3) and len(keys) >= 2:  # create account (with seed)
        if tag == 0 and len(data) == 52:
            lamports, owner = struct.unpack_from("<Q", data, 4)[0], Pubkey.from_bytes(data[20:])
        else:
            seed_len = struct.unpack_from("<Q", data, 36)[0] if len(data) >= 44 else 0
            end = 44 + seed_len
            if len(data) != end + 48:
                raise _refuse("a malformed create-account instruction")
            lamports = struct.unpack_from("<Q", data, end)[0]
            owner = Pubkey.from_bytes(data[end + 16:end + 48])
        if owner not in TOKEN_PROGRAMS:
            raise _refuse("it creates an account that is not a token account")
        # Its mint comes with its initialize; lamports beyond rent must be wrapped SOL then.
        tally.funded[keys[1]] = lamports
    else:
        raise _refuse(f"a system instruction it does not allow ({tag})")


def _wrapped_sol(account: Pubkey, me: Pubkey, tally: _Tally) -> bool:
    return account == get_associated_token_address(me, NATIVE_MINT) or (
        tally.created.get(account) == NATIVE_MINT)


def _token(ix: Instruction, me: Pubkey, expected: Expected, tally: _Tally) -> None:
    data = bytes(ix.data)
    keys = [m.pubkey for m in ix.accounts]
    tag = data[0] if data else -1
    if tag == 17:  # SyncNative
        return
    if tag in (1, 16, 18):  # InitializeAccount(/2/3): the owner is in the data or account 2
        owner = keys[2] if tag == 1 and len(keys) > 2 else (
            Pubkey.from_bytes(data[1:33]) if len(data) >= 33 else None)
        if owner != me or len(keys) < 2:
            raise _refuse("it initializes a token account the wallet does not own")
        mint = keys[1]
        if mint not in (expected.input_mint, expected.output_mint, NATIVE_MINT):
            raise _refuse(f"it opens a token account for {mint}, which the order does not"
                          " trade")
        tally.created[keys[0]] = mint
        lamports = tally.funded.pop(keys[0], 0)
        if mint == NATIVE_MINT and lamports > MAX_TOKEN_ACCOUNT_RENT:  # a temporary wSOL
            if expected.input_mint != NATIVE_MINT:
                raise _refuse("it puts lamports in a wrapped-SOL account, and the order does"
                              " not sell SOL")
            tally.wrapped += lamports - TOKEN_ACCOUNT_RENT
            lamports = TOKEN_ACCOUNT_RENT
        if lamports > MAX_TOKEN_ACCOUNT_RENT:
            raise _refuse(f"it gives a new token account {lamports} lamports, more than rent")
        return
    if tag == 9 and len(keys) >= 3:  # CloseAccount(account, destination, owner)
        if keys[2] == me and keys[1] != me:
            raise _refuse(f"it closes a wallet account into {keys[1]}")
        return
    raise _refuse(f"a token instruction it does not allow ({tag}: transfers, approvals,"
                  " authority changes and burns are the venue program's to make)")


def _associated(ix: Instruction, me: Pubkey, expected: Expected, tally: _Tally) -> None:
    data = bytes(ix.data)
    keys = [m.pubkey for m in ix.accounts]
    if data not in (b"", b"\x00", b"\x01") or len(keys) < 6:
        raise _refuse("an associated-token instruction other than create")
    if keys[0] != me or keys[2] != me:
        raise _refuse("it creates a token account for someone else")
    if keys[4] != SYSTEM_PROGRAM or keys[5] not in TOKEN_PROGRAMS:
        # The ATA program creates the account owned by whatever program it is told.
        raise _refuse(f"it creates an associated account under program {keys[5]}")
    if keys[3] not in (expected.input_mint, expected.output_mint, NATIVE_MINT):
        raise _refuse(f"it opens a token account for {keys[3]}, which the order does not"
                      " trade")
    if keys[1] != get_associated_token_address(me, keys[3], keys[5]):
        raise _refuse("it creates an account at an address that is not the wallet's")
    tally.created.setdefault(keys[1], keys[3])


def _owned(account: Pubkey, mint: Pubkey, me: Pubkey, tally: _Tally) -> bool:
    """Is `account` the wallet's own account for `mint`?"""
    if account in (get_associated_token_address(me, mint),
                   get_associated_token_address(me, mint, TOKEN_2022)):
        return True
    return tally.created.get(account) == mint


def _check_legs(me: Pubkey, expected: Expected, tally: _Tally) -> None:
    if not tally.legs:
        raise _refuse("it contains no swap")
    spent = 0
    minimum = 0
    for leg in tally.legs:
        if leg.owner != me:
            raise _refuse("a swap signed by someone other than the wallet")
        if not _owned(leg.source, expected.input_mint, me, tally):
            raise _refuse(f"a swap sells from {leg.source}, not the wallet's input account"
                          " (multi-hop routes are refused)")
        if not _owned(leg.destination, expected.output_mint, me, tally):
            raise _refuse(f"a swap pays into {leg.destination}, not the wallet's output"
                          " account")
        spent += leg.amount_in
        minimum += leg.min_amount_out
    if spent > expected.amount_in:
        raise _refuse(f"its swaps sell {spent}, the order allows {expected.amount_in}")
    if minimum < expected.min_amount_out:
        raise _refuse(f"its minimum out is {minimum}, the order's is"
                      f" {expected.min_amount_out}")


def _check_lamports(expected: Expected, tally: _Tally, count: int) -> None:
    if tally.funded:  # anyone could initialize such an account as theirs and take its lamports
        raise _refuse("it creates an account it does not initialize as the wallet's")
    if tally.wrapped > expected.amount_in:
        raise _refuse(f"it wraps {tally.wrapped} lamports, the order sells"
                      f" {expected.amount_in}")
    units = min(tally.unit_limit if tally.unit_limit is not None
                else DEFAULT_COMPUTE_UNITS * count, MAX_COMPUTE_UNITS)
    priority = -(-units * tally.unit_price // 1_000_000)
    if priority > expected.max_priority_fee_lamports:
        raise _refuse(f"its priority fee is up to {priority} lamports, the cap is"
                      f" {expected.max_priority_fee_lamports}")


# -- re-signing -------------------------------------------------------------------------


def recompile(payer: Pubkey, ixs: list[Instruction], blockhash: Hash, *, v0: bool,
              tables: Sequence[AddressLookupTableAccount] = ()) -> Message | MessageV0:
    """A message of the same instructions under the engine's own blockhash."""
    if v0:
        return MessageV0.try_compile(payer, ixs, list(tables), blockhash)
    return Message.new_with_blockhash(ixs, payer, blockhash)
