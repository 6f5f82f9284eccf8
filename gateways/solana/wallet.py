"""The trading wallet as Solana users keep it: a `solana-keygen` file or a base58 secret."""

from __future__ import annotations

import json
from pathlib import Path

from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.token.associated import get_associated_token_address

from core.errors import InvalidInput


def load_keypair(value: str) -> Keypair:
    """A keypair from a Solana CLI keypair file (the 64-byte JSON array `solana-keygen new`
    writes), that JSON array itself, or a base58 secret key.

    Errors name the form that was tried, never the secret.
    """
    text = value.strip()
    if not text.startswith("[") and len(text) < 200 and Path(text).expanduser().is_file():
        text = Path(text).expanduser().read_text().strip()
        if not text.startswith("["):
            raise InvalidInput("the wallet keypair file is not a JSON array of 64 numbers")
    if text.startswith("["):
        try:
            numbers = json.loads(text)
            if not (isinstance(numbers, list) and len(numbers) == 64
                    and all(isinstance(n, int) and 0 <= n <= 255 for n in numbers)):
                raise ValueError
            return Keypair.from_bytes(bytes(numbers))
        except ValueError:
            raise InvalidInput("the wallet keypair is not a JSON array of 64 numbers"
                               " (a solana-keygen file)") from None
    try:
        return Keypair.from_base58_string(text)
    except ValueError:
        raise InvalidInput("the wallet keypair is neither a keypair file, a JSON array of 64"
                           " numbers nor a base58 secret key") from None


def associated_account(owner: str, mint: str) -> str:
    """The associated token account of `owner` for `mint` (base58 in, base58 out)."""
    return str(get_associated_token_address(Pubkey.from_string(owner), Pubkey.from_string(mint)))
