"""API keys in PostgreSQL: created with a hash of their secret, looked up, listed, revoked."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime

from core.accounts import NewKey, Principal, Scope, hash_secret, new_key, parse_key
from storage.database import Database


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    account_id: str
    scope: Scope
    created_at: datetime
    revoked_at: datetime | None


class KeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, account_id: str, scope: Scope) -> NewKey:
        """Create a key for the account (created if new); its token is shown only now."""
        key = new_key()
        async with self._db.connection(transaction=True) as conn:
            await conn.execute("INSERT INTO accounts (account_id) VALUES (%s)"
                               " ON CONFLICT DO NOTHING", (account_id,))
            await conn.execute(
                "INSERT INTO api_keys (key_id, account_id, scope, secret_hash)"
                " VALUES (%s, %s, %s, %s)", (key.key_id, account_id, str(scope), key.secret_hash))
        return key

    async def principal(self, token: str) -> Principal | None:
        """Return who a key acts for, or None (malformed, unknown, wrong secret, revoked)."""
        parsed = parse_key(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT account_id, scope, secret_hash FROM api_keys"
                " WHERE key_id = %s AND revoked_at IS NULL", (key_id,))
            row = await cur.fetchone()
        if row is None or not hmac.compare_digest(row[2], hash_secret(secret)):
            return None
        return Principal(row[0], Scope(row[1]), key_id)

    async def list(self) -> list[KeyRecord]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT key_id, account_id, scope, created_at, revoked_at FROM api_keys"
                " ORDER BY created_at")
            return [KeyRecord(r[0], r[1], Scope(r[2]), r[3], r[4]) for r in await cur.fetchall()]

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key; return False when no active key has that id."""
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s"
                " AND revoked_at IS NULL", (key_id,))
            return cur.rowcount == 1

    async def any_active(self) -> bool:
        async with self._db.connection() as conn:
            cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM api_keys"
                                     " WHERE revoked_at IS NULL)")
            row = await cur.fetchone()
        return bool(row and row[0])
