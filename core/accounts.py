"""API keys and who they act for: an account, with a scope (trade or read)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

from core.errors import InvalidInput

KEY_PREFIX = "dxk"
_KEY = re.compile(r"dxk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_ACCOUNT = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class Scope(StrEnum):
    TRADE = "trade"  # submit orders, and everything READ may
    READ = "read"  # read and follow the account's orders, ask for quotes


@dataclass(frozen=True)
class Principal:
    """Who a request acts for."""

    account_id: str
    scope: Scope
    key_id: str

    @property
    def can_trade(self) -> bool:
        return self.scope is Scope.TRADE


@dataclass(frozen=True)
class NewKey:
    """A key as created: `token` is shown once; only `secret_hash` is stored."""

    key_id: str
    token: str
    secret_hash: str


def new_key() -> NewKey:
    """Return a fresh random key: `dxk_<12 hex id>_<43 characters of 256-bit secret>`."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id, f"{KEY_PREFIX}_{key_id}_{secret}", hash_secret(secret))


def hash_secret(secret: str) -> str:
    """Return the stored form of a key's secret.

    A plain SHA-256 suffices: the secret is 256 random bits, so there is nothing to guess
    that a slow hash would protect (unlike a password).
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(token: str) -> tuple[str, str] | None:
    """Return (key_id, secret) of a well-formed key, or None."""
    match = _KEY.fullmatch(token.strip())
    return (match.group(1), match.group(2)) if match else None


def check_account_name(name: str) -> str:
    """Return `name` if it can name an account, or raise InvalidInput."""
    if not _ACCOUNT.fullmatch(name):
        raise InvalidInput("an account name is 1 to 64 of A-Z a-z 0-9 . _ : -")
    return name
