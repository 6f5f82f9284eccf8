"""A simulated venue gateway (Raydium or Meteora flavoured) over the simulated chain."""

from __future__ import annotations

import json
import random
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, Protocol, TypeVar

from solders.keypair import Keypair

from core.errors import InvalidInput, VenueTimeout, VenueUnavailable
from core.quotes import Quote, SignedSwap, TxStatus
from core.tokens import TokenRegistry
from gateways.ratelimit import TokenBucket
from gateways.simulated.program import build_swap_transaction

QUOTE_TTL_S = 30.0
BLOCKHASH_REUSE_S = 0.4  # a slot

T = TypeVar("T")


class ChainClient(Protocol):
    """What a simulated gateway needs from the simulated chain and venue servers.

    In the default set-up that is the chain actor: it plays the network, the venues' API
    servers (their latency and failures) and the chain itself.
    """

    async def quote(
        self, venue: str, token_in: str, token_out: str, amount_in: int
    ) -> dict[str, object]: ...

    async def latest_blockhash(self) -> tuple[str, int]: ...

    async def send_transaction(self, venue: str, tx_bytes: bytes) -> str: ...

    async def signature_statuses(self, signatures: list[str]) -> list[TxStatus | None]: ...

    async def block_height(self) -> int: ...


@dataclass
class Faults:
    """Failure injection for one venue: rates from settings, counts from tests."""

    down: bool = False
    fail_rate: float = 0.0
    timeout_rate: float = 0.0
    fail_next: int = 0  # the next N calls fail with a transient error

    def check(self, venue: str, rng: random.Random) -> None:
        if self.down:
            raise VenueUnavailable(f"{venue} is down", venue=venue)
        if self.fail_next > 0:
            self.fail_next -= 1
            raise VenueUnavailable(f"{venue} answered 503 (injected)", venue=venue)
        if self.fail_rate and rng.random() < self.fail_rate:
            raise VenueUnavailable(f"{venue} answered 503 (injected)", venue=venue)
        if self.timeout_rate and rng.random() < self.timeout_rate:
            raise VenueTimeout(f"{venue} timed out (injected)", venue=venue)


class VenueBehaviour:
    """How one simulated venue's servers behave: their latency and their failures.

    It lives with the simulated chain (the server side), so every worker and replica that
    calls the venue sees the same behaviour, and a test that injects one failure gets one.
    """

    def __init__(self, name: str, *, quote_latency_ms: tuple[int, int],
                 swap_latency_ms: tuple[int, int], faults: Faults, seed: int) -> None:
        self.name = name
        self.quote_latency_ms = quote_latency_ms
        self.swap_latency_ms = swap_latency_ms
        self.faults = faults
        self._rng = random.Random(f"{seed}:{name}")

    def _draw(self, bounds: tuple[int, int]) -> float:
        low, high = bounds
        return self._rng.uniform(low, high) / 1000 if high > 0 else 0.0

    def quote_delay_s(self) -> float:
        """Seconds the venue takes to answer a quote."""
        return self._draw(self.quote_latency_ms)

    def landing_delay_s(self) -> float:
        """Seconds from accepting a swap until it lands."""
        return self._draw(self.swap_latency_ms)

    def check(self) -> None:
        """Raise the injected failure of this call, if any."""
        self.faults.check(self.name, self._rng)


class SimulatedVenue:
    """Quotes from and swaps against one venue's pools on the simulated chain.

    Stateless about orders: it holds a client, the wallet, a rate limit and a recent
    blockhash, so every worker runs its own copy in-process, like a live gateway's HTTP client.
    """

    def __init__(
        self,
        name: str,
        chain: ChainClient,
        wallet: Keypair,
        tokens: TokenRegistry,
        *,
        rate_limit_per_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._chain = chain
        self._wallet = wallet
        self._tokens = tokens
        self._limit = TokenBucket(rate_limit_per_s)
        # Every build needs a blockhash, valid for about 150 slots; an expiry check needs the
        # height, and one a slot behind merely finds an expiry a slot later. Both are asked of
        # the chain at most once a slot.
        self._blockhash: _PerSlot[tuple[str, int]] = _PerSlot(chain.latest_blockhash, clock)
        self._height: _PerSlot[int] = _PerSlot(self._fetch_height, clock)

    async def quote(self, input_mint: str, output_mint: str, amount_in: int) -> Quote:
        await self._limit.acquire()
        started = time.perf_counter()
        token_in = self._tokens.by_mint(input_mint).symbol
        token_out = self._tokens.by_mint(output_mint).symbol
        answer = await self._chain.quote(self.name, token_in, token_out, amount_in)
        return Quote(
            venue=self.name,
            pool=str(answer["pool"]),
            input_mint=input_mint,
            output_mint=output_mint,
            amount_in=amount_in,
            amount_out=int(answer["amount_out"]),  # type: ignore[call-overload]
            fee=int(answer["fee"]),  # type: ignore[call-overload]
            fee_bps=Decimal(str(answer["fee_bps"])),
            price_impact_bps=int(answer["price_impact_bps"]),  # type: ignore[call-overload]
            expires_at=time.time() + QUOTE_TTL_S,
            payload=json.dumps({"pool": answer["pool"], "x_to_y": answer["x_to_y"]}),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    async def build_swap(self, quote: Quote, min_amount_out: int, memo: str) -> SignedSwap:
        if quote.venue != self.name:
            raise InvalidInput(f"quote from {quote.venue} sent to {self.name}")
        route = json.loads(quote.payload)
        blockhash, last_valid = await self._blockhash.get()
        try:
            tx = build_swap_transaction(
                self._wallet, route["pool"], quote.amount_in, min_amount_out, route["x_to_y"],
                blockhash, memo,
            )
        except (struct.error, ValueError) as exc:
            raise InvalidInput(f"cannot build the swap: {exc}", venue=self.name) from None
        return SignedSwap(self.name, str(tx.signatures[0]), bytes(tx), last_valid, min_amount_out)

    async def send(self, swap: SignedSwap) -> None:
        await self._limit.acquire()
        await self._chain.send_transaction(self.name, swap.tx_bytes)

    async def statuses(self, signatures: list[str]) -> list[TxStatus | None]:
        await self._limit.acquire()
        return await self._chain.signature_statuses(signatures)

    async def block_height(self) -> int:
        """Return the block height, at most a slot old."""
        return await self._height.get()

    async def _fetch_height(self) -> int:
        await self._limit.acquire()
        return await self._chain.block_height()


class _PerSlot(Generic[T]):
    """The answer of `fetch`, asked anew only once it is more than BLOCKHASH_REUSE_S old."""

    def __init__(self, fetch: Callable[[], Awaitable[T]], clock: Callable[[], float]) -> None:
        self._fetch = fetch
        self._clock = clock
        self._answer: tuple[T, float] | None = None  # (answer, fetched at)

    async def get(self) -> T:
        now = self._clock()
        if self._answer is None or now - self._answer[1] > BLOCKHASH_REUSE_S:
            self._answer = (await self._fetch(), now)
        return self._answer[0]
