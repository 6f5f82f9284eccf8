"""The simulated AMM program's swap instruction: one layout shared by gateways and chain."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from gateways.solana.ids import MEMO_PROGRAM

PROGRAM_ID = Pubkey.find_program_address([b"dexec-sim-amm"], Pubkey.default())[0]
_SWAP = struct.Struct("<8sQQB")
_DISCRIMINATOR = b"dxswap01"


@dataclass(frozen=True)
class SwapInstruction:
    owner: str
    pool: str
    amount_in: int
    min_amount_out: int
    x_to_y: bool


def pool_address(venue: str, token_x: str, token_y: str) -> str:
    """Return the deterministic base58 address of a simulated pool."""
    seeds = [venue.encode(), token_x.encode(), token_y.encode()]
    return str(Pubkey.find_program_address(seeds, PROGRAM_ID)[0])


def build_swap_transaction(
    wallet: Keypair, pool: str, amount_in: int, min_amount_out: int, x_to_y: bool,
    blockhash: str, memo: str,
) -> Transaction:
    """Build and sign a swap transaction paying from `wallet`.

    The memo (the order id and attempt) makes every order's transaction unique: ed25519 is
    deterministic, so two identical swaps in the same block would otherwise share a
    signature and the chain would execute only one of them.
    """
    data = _SWAP.pack(_DISCRIMINATOR, amount_in, min_amount_out, int(x_to_y))
    payer = wallet.pubkey()
    accounts = [
        AccountMeta(payer, is_signer=True, is_writable=True),
        AccountMeta(Pubkey.from_string(pool), is_signer=False, is_writable=True),
    ]
    swap = Instruction(PROGRAM_ID, data, accounts)
    note = Instruction(MEMO_PROGRAM, memo.encode(),
                       [AccountMeta(payer, is_signer=True, is_writable=False)])
    # The same transaction new_signed_with_payer builds, at a third of its cost.
    message = Message.new_with_blockhash([note, swap], payer, Hash.from_string(blockhash))
    return Transaction.populate(message, [wallet.sign_message(bytes(message))])


def decode_swap(tx: Transaction) -> SwapInstruction:
    """Return the swap a transaction asks for; raise ValueError if it is not one."""
    message = tx.message
    keys = message.account_keys
    swaps = [ix for ix in message.instructions if keys[ix.program_id_index] == PROGRAM_ID]
    if len(swaps) != 1:
        raise ValueError("expected exactly one swap instruction for the simulated AMM program")
    ix = swaps[0]
    if len(ix.data) != _SWAP.size:
        raise ValueError("swap instruction data has the wrong length")
    tag, amount_in, min_out, x_to_y = _SWAP.unpack(bytes(ix.data))
    if tag != _DISCRIMINATOR:
        raise ValueError("unknown instruction")
    owner, pool = (keys[i] for i in bytes(ix.accounts))
    return SwapInstruction(str(owner), str(pool), amount_in, min_out, bool(x_to_y))
