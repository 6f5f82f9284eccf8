"""Who a request acts for: its API key, from the Authorization header, to a Principal."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Awaitable, Callable

from fastapi import Request

from core.accounts import Principal
from core.errors import NotAuthenticated

HOW = ("send `Authorization: Bearer <key>` (`dexec keys create`; `dexec up` writes a dev key"
       " to .dexec/api-key)")


def key_from_header(authorization: str | None) -> str | None:
    """Return the key in an Authorization header: `Bearer <key>`, or Basic with the key as
    password (or as user name), for tools that only speak Basic."""
    if not authorization:
        return None
    kind, _, value = authorization.strip().partition(" ")
    if kind.lower() == "bearer":
        return value.strip() or None
    if kind.lower() == "basic":
        try:
            pair = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, password = pair.partition(":")
        return password or user or None
    return None


class Authenticator:
    """Resolve keys to principals, remembering each answer for `ttl_s` (a revoked key stops
    working within that; an unknown key costs one lookup per `ttl_s`)."""

    def __init__(self, lookup: Callable[[str], Awaitable[Principal | None]], *,
                 ttl_s: float = 5.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup = lookup
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._known: dict[str, tuple[Principal | None, float]] = {}

    async def principal(self, key: str | None) -> Principal:
        """Return who `key` acts for, or raise NotAuthenticated."""
        if not key:
            raise NotAuthenticated(f"an API key is required: {HOW}")
        now = self._clock()
        known = self._known.get(key)
        if known is None or known[1] <= now:
            if len(self._known) >= self._max:
                self._known.clear()
            known = (await self._lookup(key), now + self._ttl)
            self._known[key] = known
        if known[0] is None:
            raise NotAuthenticated("the API key is not valid (unknown or revoked)")
        return known[0]


async def request_principal(request: Request) -> Principal:
    """FastAPI dependency: who this request acts for (the app's state holds the Authenticator)."""
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.principal(key_from_header(request.headers.get("authorization")))
