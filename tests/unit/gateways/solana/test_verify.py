"""Nothing is signed unchecked: what `verify` lets through, and everything it refuses."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import (
    CreateAccountWithSeedParams,
    TransferParams,
    create_account_with_seed,
    transfer,
)
from solders.token import ID as TOKEN_PROGRAM
from solders.token.associated import get_associated_token_address
from solders.transaction import VersionedTransaction

from core.errors import UnsafeTransaction
from gateways.solana import cpmm, dlmm
from gateways.solana.venue import create_ata_idempotent, memo_instruction, swap_instructions
from gateways.solana.verify import (
    AMM_V4,
    CLMM,
    CLMM_SWAP_V2,
    METEORA_PROGRAMS,
    RAYDIUM_PROGRAMS,
    Expected,
    instructions,
    lookup_table,
    recompile,
    verify,
)

SOL = Pubkey.from_string("So11111111111111111111111111111111111111112")
USDC = Pubkey.from_string("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v")
ME = Keypair().pubkey()
STRANGER = Keypair().pubkey()
POOL = Keypair().pubkey()
AMOUNT, MINIMUM = 10**9, 140 * 10**6


def cpmm_swap(amount: int = AMOUNT, minimum: int = MINIMUM, *, source: Pubkey | None = None,
              destination: Pubkey | None = None) -> Instruction:
    accounts = cpmm.SwapAccounts(
        payer=ME, authority=cpmm.authority()[0], amm_config=Keypair().pubkey(),
        pool_state=POOL, input_token_account=source or get_associated_token_address(ME, SOL),
        output_token_account=destination or get_associated_token_address(ME, USDC),
        input_vault=Keypair().pubkey(), output_vault=Keypair().pubkey(),
        input_token_program=TOKEN_PROGRAM, output_token_program=TOKEN_PROGRAM,
        input_token_mint=SOL, output_token_mint=USDC, observation_state=Keypair().pubkey())
    return cpmm.swap_base_input(accounts, amount, minimum)


def good(swap: Instruction | None = None) -> list[Instruction]:
    """What the Trade API builds for SOL -> USDC: priority fee, ATA, wrap, swap."""
    return [set_compute_unit_limit(300_000), set_compute_unit_price(10_000),
            *swap_instructions(ME, SOL, USDC, AMOUNT, swap or cpmm_swap())]


def expected(**changes: object) -> Expected:
    base = {"wallet": ME, "input_mint": SOL, "output_mint": USDC, "amount_in": AMOUNT,
            "min_amount_out": MINIMUM, "venue_programs": RAYDIUM_PROGRAMS,
            "max_priority_fee_lamports": 14_000}
    base.update(changes)
    return Expected(**base)  # type: ignore[arg-type]


def test_a_plain_swap_with_wrap_fee_and_memo_passes() -> None:
    verify(ME, [memo_instruction("dexec:o:1", ME), *good()], expected())


def test_the_wallet_s_own_dlmm_swap_passes_with_meteora_s_programs() -> None:
    pair = dlmm.LbPair(token_x_mint=SOL, token_y_mint=USDC, reserve_x=Keypair().pubkey(),
                       reserve_y=Keypair().pubkey(), oracle=Keypair().pubkey(), bin_step=10,
                       active_id=0, base_factor=10_000, index_reference=0,
                       last_update_timestamp=0, bin_array_bitmap=0)
    accounts = dlmm.SwapAccounts.for_pair(POOL, pair, ME, SOL)
    swap = dlmm.swap_instruction(accounts, AMOUNT, MINIMUM, [Keypair().pubkey()])
    verify(ME, swap_instructions(ME, SOL, USDC, AMOUNT, swap),
           expected(venue_programs=METEORA_PROGRAMS))
    with pytest.raises(UnsafeTransaction, match="allow-list"):  # not Raydium's program
        verify(ME, swap_instructions(ME, SOL, USDC, AMOUNT, swap), expected())


def _token_ix(tag: int, *accounts: Pubkey, data: bytes = b"") -> Instruction:
    return Instruction(TOKEN_PROGRAM, bytes([tag]) + data,
                       [AccountMeta(a, a == ME, True) for a in accounts])


WSOL = get_associated_token_address(ME, SOL)
SEEDED = Pubkey.create_with_seed(ME, "x", TOKEN_PROGRAM)


def seeded_account(lamports: int, mint: Pubkey | None) -> list[Instruction]:
    """A token account made from a seed with `lamports`, initialized for `mint` (or not)."""
    create = create_account_with_seed(CreateAccountWithSeedParams(
        from_pubkey=ME, to_pubkey=SEEDED, base=ME, seed="x", lamports=lamports, space=165,
        owner=TOKEN_PROGRAM))
    if mint is None:
        return [create]
    return [create, _token_ix(18, SEEDED, mint, data=bytes(ME))]


def _ata_under(program: Pubkey, mint: Pubkey) -> Instruction:
    """The ATA program's create, told to use `program` as the token program."""
    from solders.system_program import ID as SYSTEM

    from gateways.solana.ids import ATA_PROGRAM
    ata = get_associated_token_address(ME, mint, program)
    return Instruction(ATA_PROGRAM, b"\x01", [
        AccountMeta(ME, True, True), AccountMeta(ata, False, True),
        AccountMeta(ME, False, False), AccountMeta(mint, False, False),
        AccountMeta(SYSTEM, False, False), AccountMeta(program, False, False)])


REFUSED: dict[str, tuple[Callable[[], list[Instruction]], str]] = {
    "an unknown program": (
        lambda: [*good(), Instruction(STRANGER, b"", [AccountMeta(ME, True, True)])],
        "allow-list"),
    "a token transfer out of the wallet": (
        lambda: [*good(), _token_ix(3, WSOL, get_associated_token_address(STRANGER, SOL), ME,
                                    data=struct.pack("<Q", 1))], "token instruction"),
    "an approval to a delegate": (
        lambda: [*good(), _token_ix(4, WSOL, STRANGER, ME, data=struct.pack("<Q", 1))],
        "token instruction"),
    "a wSOL account closed into someone else": (
        lambda: [*good(), _token_ix(9, WSOL, STRANGER, ME)], "closes a wallet account"),
    "lamports sent to a stranger": (
        lambda: [*good(), transfer(TransferParams(from_pubkey=ME, to_pubkey=STRANGER,
                                                  lamports=1))], "transfers 1 lamports"),
    "more SOL wrapped than the order sells": (
        lambda: [*good(), transfer(TransferParams(from_pubkey=ME, to_pubkey=WSOL,
                                                  lamports=1))], "wraps"),
    "a swap selling more than the order": (
        lambda: good(cpmm_swap(amount=AMOUNT + 1)), "sell"),
    "a minimum out below the order's": (
        lambda: good(cpmm_swap(minimum=MINIMUM - 1)), "minimum out"),
    "output paid to someone else": (
        lambda: good(cpmm_swap(destination=get_associated_token_address(STRANGER, USDC))),
        "pays into"),
    "input taken from another account": (
        lambda: good(cpmm_swap(source=get_associated_token_address(ME, USDC))), "sells from"),
    "a priority fee above the cap": (
        lambda: [set_compute_unit_limit(1_400_000), set_compute_unit_price(1_000_000),
                 *good()[2:]], "priority fee"),
    "no swap at all": (lambda: good()[:-1], "no swap"),
    "lamports parked in a new token account": (
        lambda: [*seeded_account(500 * 10**9, USDC), *good()], "more than rent"),
    "a token account for a mint the order does not trade": (
        lambda: [*seeded_account(2_039_280, STRANGER), *good()], "does not trade"),
    "an account funded and left for anyone to initialize": (
        lambda: [*seeded_account(2_039_280, None), *good()], "does not initialize"),
    "an associated account under another program": (
        lambda: [*good(), _ata_under(STRANGER, SOL)], "under program"),
    "an associated account for a mint the order does not trade": (
        lambda: [*good(), _ata_under(TOKEN_PROGRAM, STRANGER)], "does not trade"),
    "an account created for someone else": (
        lambda: [*good(), create_ata_idempotent(ME, STRANGER, USDC)], "someone else"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_transaction_that_does_more_than_the_order_is_refused(case: str) -> None:
    build, why = REFUSED[case]
    with pytest.raises(UnsafeTransaction, match=why):
        verify(ME, build(), expected())


def test_a_temporary_wsol_account_holds_the_input_only_when_sol_is_sold() -> None:
    wrap = seeded_account(AMOUNT + 2_039_280, SOL)
    sell_from_it = cpmm_swap(source=SEEDED)
    verify(ME, [*wrap, sell_from_it], expected())  # SOL sold from a temporary account
    with pytest.raises(UnsafeTransaction, match="wraps"):
        verify(ME, [*seeded_account(AMOUNT + 2_039_281 + 5, SOL), sell_from_it], expected())
    usdc_sale = expected(input_mint=USDC, output_mint=SOL)
    swap = cpmm_swap(source=get_associated_token_address(ME, USDC), destination=WSOL)
    with pytest.raises(UnsafeTransaction, match="does not sell SOL"):
        verify(ME, [*seeded_account(10**9, SOL), swap], usdc_sale)


def test_the_payer_must_be_the_wallet_and_the_only_signer() -> None:
    with pytest.raises(UnsafeTransaction, match="fee payer"):
        verify(STRANGER, good(), expected())
    with pytest.raises(UnsafeTransaction, match="signatures"):
        verify(ME, good(), expected(), num_signers=2)


def test_exact_output_and_other_venues_swaps_are_read_or_refused() -> None:
    amm_v4 = Instruction(AMM_V4, bytes([9]) + struct.pack("<QQ", AMOUNT, MINIMUM), [
        AccountMeta(k, k == ME, True) for k in
        [*(Keypair().pubkey() for _ in range(14)), WSOL,
         get_associated_token_address(ME, USDC), ME]])
    verify(ME, swap_instructions(ME, SOL, USDC, AMOUNT, amm_v4), expected())
    clmm_keys = [ME, Keypair().pubkey(), POOL, WSOL, get_associated_token_address(ME, USDC),
                 *(Keypair().pubkey() for _ in range(8))]
    exact_out = Instruction(CLMM, CLMM_SWAP_V2 + struct.pack("<QQ", AMOUNT, MINIMUM)
                            + bytes(16) + b"\x00", [AccountMeta(k, k == ME, True)
                                                    for k in clmm_keys])
    with pytest.raises(UnsafeTransaction, match="exact-output"):
        verify(ME, swap_instructions(ME, SOL, USDC, AMOUNT, exact_out), expected())


def test_v0_lookup_tables_are_resolved_and_kept_when_recompiled() -> None:
    table_key = Keypair().pubkey()
    original = good()
    table = AddressLookupTableAccount(table_key, [m.pubkey for m in original[-1].accounts[1:4]])
    message = MessageV0.try_compile(ME, original, [table], Hash.default())
    assert message.address_table_lookups  # some keys come from the table
    tx = VersionedTransaction.populate(message, [Signature.default()])
    data = bytes(56) + b"".join(bytes(k) for k in table.addresses)

    def shape(ixs: list[Instruction]) -> list[tuple[Pubkey, bytes, list[Pubkey]]]:
        # compiling merges each account's flags across instructions: compare the rest
        return [(ix.program_id, bytes(ix.data), [m.pubkey for m in ix.accounts]) for ix in ixs]

    payer, ixs = instructions(tx, [lookup_table(table_key, data)])
    assert payer == ME and shape(ixs) == shape(original)
    verify(payer, ixs, expected())
    with pytest.raises(UnsafeTransaction, match="was not read"):
        instructions(tx, [])

    again = recompile(ME, [memo_instruction("m", ME), *ixs], Hash.new_unique(), v0=True,
                      tables=[table])
    assert isinstance(again, MessageV0) and again.address_table_lookups
    legacy = recompile(ME, ixs, Hash.new_unique(), v0=False)
    assert isinstance(legacy, Message)


def test_a_token_2022_output_gets_its_account_under_token_2022_and_passes() -> None:
    from gateways.solana.ids import TOKEN_2022

    pair = dlmm.LbPair(token_x_mint=SOL, token_y_mint=USDC, reserve_x=Keypair().pubkey(),
                       reserve_y=Keypair().pubkey(), oracle=Keypair().pubkey(), bin_step=10,
                       active_id=0, base_factor=10_000, index_reference=0,
                       last_update_timestamp=0, bin_array_bitmap=0, token_y_program_flag=1)
    swap = dlmm.swap_instruction(dlmm.SwapAccounts.for_pair(POOL, pair, ME, SOL), AMOUNT,
                                 MINIMUM, [Keypair().pubkey()])
    ixs = swap_instructions(ME, SOL, USDC, AMOUNT, swap)
    (create_out,) = [ix for ix in ixs if ix.accounts and len(ix.accounts) == 6
                     and ix.accounts[3].pubkey == USDC]
    assert create_out.accounts[5].pubkey == TOKEN_2022
    assert create_out.accounts[1].pubkey == get_associated_token_address(ME, USDC, TOKEN_2022)
    verify(ME, ixs, expected(venue_programs=METEORA_PROGRAMS))
