"""Tokens on no list: a live network's mint is looked up on the chain, not refused.

The network's token list (core.tokens) names the common tokens. Any other base58 mint an
order names is read over RPC once (`getAccountInfo`: an initialized SPL Token or Token-2022
mint, its decimals) and learned by this process's registry, under its mint as its symbol.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from core.tokens import Token, TokenRegistry, looks_like_mint
from gateways.solana.rpc import SolanaRpc

NOT_A_MINT_TTL_S = 60.0


class MintLookup:
    def __init__(self, rpc: SolanaRpc, tokens: TokenRegistry) -> None:
        self._rpc = rpc
        self._tokens = tokens
        # Looked up and found to be no mint: not asked again for a minute (a client naming
        # random addresses must not cost an RPC call each).
        self._not_mints: dict[str, float] = {}

    async def ensure(self, refs: Iterable[str]) -> None:
        """Learn every base58 mint in `refs` the registry does not know yet; leave the rest
        (the registry's own `resolve` refuses them with the reason)."""
        for ref in dict.fromkeys(refs):
            if not isinstance(ref, str) or self._tokens.knows(ref) or not looks_like_mint(ref):
                continue
            now = time.monotonic()
            if now - self._not_mints.get(ref, -NOT_A_MINT_TTL_S) < NOT_A_MINT_TTL_S:
                continue
            decimals = await self._rpc.mint_decimals(ref)
            if decimals is None:
                if len(self._not_mints) >= 10_000:
                    self._not_mints.clear()
                self._not_mints[ref] = now
                continue
            self._tokens.learn(Token(ref, ref, decimals))
