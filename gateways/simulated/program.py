"""The simulated AMM program's swap instruction: one layout shared by gateways and chain."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import Transaction

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
    blockhash: str,
) -> Transaction:
    """Build and sign a swap transaction paying from `wallet`."""
    data = _SWAP.pack(_DISCRIMINATOR, amount_in, min_amount_out, int(x_to_y))
    accounts = [
        AccountMeta(wallet.pubkey(), is_signer=True, is_writable=True),
        AccountMeta(Pubkey.from_string(pool), is_signer=False, is_writable=True),
    ]
    ix = Instruction(PROGRAM_ID, data, accounts)
    return Transaction.new_signed_with_payer(
        [ix], wallet.pubkey(), [wallet], Hash.from_string(blockhash)
    )


def decode_swap(tx: Transaction) -> SwapInstruction:
    """Return the swap a transaction asks for; raise ValueError if it is not one."""
    message = tx.message
    if len(message.instructions) != 1:
        raise ValueError("expected exactly one instruction")
    ix = message.instructions[0]
    keys = message.account_keys
    if keys[ix.program_id_index] != PROGRAM_ID:
        raise ValueError("instruction is not for the simulated AMM program")
    if len(ix.data) != _SWAP.size:
        raise ValueError("swap instruction data has the wrong length")
    tag, amount_in, min_out, x_to_y = _SWAP.unpack(bytes(ix.data))
    if tag != _DISCRIMINATOR:
        raise ValueError("unknown instruction")
    owner, pool = (keys[i] for i in bytes(ix.accounts))
    return SwapInstruction(str(owner), str(pool), amount_in, min_out, bool(x_to_y))
