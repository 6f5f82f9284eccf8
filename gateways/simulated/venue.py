"""A simulated venue gateway (Raydium or Meteora flavoured) over the simulated chain."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from solders.keypair import Keypair
from solders.transaction import VersionedTransaction

from core.errors import InvalidInput
from core.quotes import Quote, SignedSwap, TxStatus
from core.tokens import TokenRegistry
from gateways.base import PerSlot, VenueCalls, VenueMetrics, signing_wallet
from gateways.ratelimit import TokenBucket
from gateways.simulated.program import build_swap_transaction
from gateways.simulated.schema import PoolQuote, SwapRoute

QUOTE_TTL_S = 30.0

T = TypeVar("T")


class ChainClient(Protocol):
    """What a simulated gateway needs from the simulated chain and venue servers.

    In the default set-up that is the chain actor (gateways.simulated.server.ChainServer in
    its Ray shell): it plays the network, the venues' API servers and the chain itself.
    """

    async def quote(
        self, venue: str, token_in: str, token_out: str, amount_in: int
    ) -> PoolQuote: ...

    async def latest_blockhash(self) -> tuple[str, int]: ...

    async def send_transaction(self, venue: str, tx_bytes: bytes) -> str: ...

    async def signature_statuses(self, signatures: list[str]) -> list[TxStatus | None]: ...

    async def block_height(self) -> int: ...


class SimulatedVenue:
    """Quotes from and swaps against one venue's pools on the simulated chain.

    Stateless about orders: it holds a client, the wallet, a rate limit and a recent
    blockhash, so every worker runs its own copy in-process, like a live gateway's HTTP
    client. Every call is timed and whatever the client raises is translated here.
    """

    def __init__(
        self,
        name: str,
        chain: ChainClient,
        wallet: Keypair | None,
        tokens: TokenRegistry,
        *,
        rate_limit_per_s: float = 0.0,
        metrics: VenueMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._chain = chain
        self._wallet = wallet
        self._tokens = tokens
        self._limit = TokenBucket(rate_limit_per_s)
        self._calls = VenueCalls(name, metrics)
        # Every build needs a blockhash, valid for about 150 slots; an expiry check needs the
        # height, and one a slot behind merely finds an expiry a slot later. Both are asked of
        # the chain at most once a slot.
        self._blockhash: PerSlot[tuple[str, int]] = PerSlot(chain.latest_blockhash, clock)
        self._height: PerSlot[int] = PerSlot(self._fetch_height, clock)

    async def quote(self, input_mint: str, output_mint: str, amount_in: int) -> Quote:
        async with self._calls.call("quote"):
            await self._limit.acquire()
            started = time.perf_counter()
            token_in = self._tokens.by_mint(input_mint).symbol
            token_out = self._tokens.by_mint(output_mint).symbol
            answer = await self._chain.quote(self.name, token_in, token_out, amount_in)
            return Quote(
                venue=self.name,
                pool=answer.pool,
                input_mint=input_mint,
                output_mint=output_mint,
                amount_in=amount_in,
                amount_out=answer.amount_out,
                fee=answer.fee,
                fee_bps=answer.fee_bps,
                price_impact_bps=answer.price_impact_bps,
                expires_at=time.time() + QUOTE_TTL_S,
                payload=SwapRoute(answer.pool, answer.x_to_y).encode(),
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
            )

    async def check_funds(self, input_mint: str, amount_in: int) -> None:
        """The simulated chain funds its wallet without limit: nothing to check."""
        return None

    async def build_swap(self, quote: Quote, min_amount_out: int, memo: str) -> SignedSwap:
        async with self._calls.call("build"):
            wallet = signing_wallet(self.name, self._wallet, quote)
            blockhash, last_valid = await self._blockhash.get()
            try:
                route = SwapRoute.decode(quote.payload)
                tx = build_swap_transaction(
                    wallet, route.pool, quote.amount_in, min_amount_out, route.x_to_y,
                    blockhash, memo,
                )
            except (struct.error, ValueError) as exc:
                raise InvalidInput(f"cannot build the swap: {exc}", venue=self.name) from None
            return SignedSwap(self.name, str(tx.signatures[0]), bytes(tx), last_valid,
                              min_amount_out)

    async def send(self, swap: SignedSwap) -> None:
        async with self._calls.call("send"):
            await self._limit.acquire()
            await self._chain.send_transaction(self.name, swap.tx_bytes)

    async def simulate(self, swap: SignedSwap) -> None:
        """The simulated chain runs nothing without landing it: a dry run there checks that
        the signed bytes are a transaction."""
        async with self._calls.call("simulate"):
            try:
                VersionedTransaction.from_bytes(swap.tx_bytes)
            except ValueError as exc:
                raise InvalidInput(f"not a transaction: {exc}", venue=self.name) from None

    async def statuses(self, signatures: list[str]) -> list[TxStatus | None]:
        async with self._calls.call("status"):
            await self._limit.acquire()
            return await self._chain.signature_statuses(signatures)

    async def block_height(self) -> int:
        """Return the block height, at most a slot old."""
        return await self._height.get()

    async def _fetch_height(self) -> int:
        async with self._calls.call("height"):
            await self._limit.acquire()
            return await self._chain.block_height()
