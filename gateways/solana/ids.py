"""Well-known Solana addresses every chain module names: the token programs, the associated
token account and memo programs, and wrapped SOL's mint."""

from __future__ import annotations

from solders.pubkey import Pubkey
from solders.token import ID as TOKEN_PROGRAM

TOKEN_2022 = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
TOKEN_PROGRAMS = frozenset({TOKEN_PROGRAM, TOKEN_2022})
ATA_PROGRAM = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
MEMO_PROGRAM = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
MEMO_V1 = Pubkey.from_string("Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo")
NATIVE_MINT = Pubkey.from_string("So11111111111111111111111111111111111111112")  # wrapped SOL
