"""The one interface every venue gateway implements, and what every gateway does per call."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from core.errors import DexecError, InvalidInput, NotPermitted, VenueUnavailable, reason
from core.quotes import Quote, SignedSwap, TxStatus

SLOT_S = 0.4  # a Solana slot: blockhashes and block heights are asked at most this often

T = TypeVar("T")
W = TypeVar("W")


class VenueGateway(Protocol):
    """quote, then build (signed, recorded by the caller), then send, then status by signature.

    Building and sending are separate so the caller can persist the signature, signed bytes
    and expiry height before anything reaches the network (the exactly-once rule). A gateway
    raises only DexecErrors: whatever its transport raises is translated inside it.
    """

    name: str

    async def quote(self, input_mint: str, output_mint: str, amount_in: int) -> Quote:
        """Return what the venue would pay now; execute nothing."""
        ...

    async def check_funds(self, input_mint: str, amount_in: int) -> None:
        """Raise InsufficientFunds unless the wallet can pay `amount_in` and the fees."""
        ...

    async def build_swap(self, quote: Quote, min_amount_out: int, memo: str) -> SignedSwap:
        """Return a signed transaction for `quote` that refuses to pay less than the minimum.

        `memo` (the order id and attempt) goes into the transaction so that two orders with
        identical swaps never share a signature.
        """
        ...

    async def send(self, swap: SignedSwap) -> None:
        """Send the signed bytes; sending the same bytes again must be harmless."""
        ...

    async def simulate(self, swap: SignedSwap) -> None:
        """Run the signed transaction without sending it (a dry run); raise the error it
        would fail with (e.g. SlippageExceeded), translated like a send's."""
        ...

    async def statuses(self, signatures: list[str]) -> list[TxStatus | None]:
        """Return each signature's landed status, None where the chain has no record."""
        ...

    async def block_height(self) -> int:
        """Return the current block height (a signed swap expires after its last valid one)."""
        ...


class VenueMetrics(Protocol):
    """Where a gateway reports each call (actors.metrics.RayVenueMetrics exports them)."""

    def call(self, venue: str, call: str, seconds: float, error_code: str | None) -> None: ...


class NoVenueMetrics:
    def call(self, venue: str, call: str, seconds: float, error_code: str | None) -> None:
        return None


class VenueCalls:
    """Time each call a gateway makes to its venue and translate what it raises.

    A DexecError passes through; anything else (whatever the venue's library raised) becomes
    a retryable VenueUnavailable with its reason, so the caller's attempt cap bounds it.
    """

    def __init__(self, venue: str, metrics: VenueMetrics | None = None) -> None:
        self._venue = venue
        self._metrics = metrics or NoVenueMetrics()

    @contextlib.asynccontextmanager
    async def call(self, name: str) -> AsyncIterator[None]:
        started = time.perf_counter()
        code: str | None = None
        try:
            yield
        except DexecError as exc:
            code = exc.code
            raise
        except Exception as exc:
            code = "error"
            raise VenueUnavailable(f"{self._venue} {name} failed: {reason(exc)}",
                                   venue=self._venue) from None
        finally:
            self._metrics.call(self._venue, name, time.perf_counter() - started, code)


def signing_wallet(venue: str, wallet: W | None, quote: Quote) -> W:
    """The wallet to sign the swap of `quote` with at `venue`, or why this gateway may not."""
    if wallet is None:
        raise NotPermitted(f"{venue}: this process only quotes; it holds no wallet")
    if quote.venue != venue:
        raise InvalidInput(f"quote from {quote.venue} sent to {venue}")
    return wallet


class PerSlot(Generic[T]):
    """The answer of `fetch`, asked anew only once it is more than `max_age_s` (a slot) old.

    A blockhash stays valid for about 150 slots, and a height a slot behind merely finds an
    expiry a slot later: both are asked of the chain at most once a slot.
    """

    def __init__(self, fetch: Callable[[], Awaitable[T]], clock: Callable[[], float],
                 max_age_s: float = SLOT_S) -> None:
        self._fetch = fetch
        self._clock = clock
        self._max_age = max_age_s
        self._answer: tuple[T, float] | None = None

    async def get(self) -> T:
        now = self._clock()
        if self._answer is None or now - self._answer[1] > self._max_age:
            self._answer = (await self._fetch(), now)
        return self._answer[0]
