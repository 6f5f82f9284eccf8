"""The one interface every venue gateway implements, simulated or live."""

from __future__ import annotations

from typing import Protocol

from core.quotes import Quote, SignedSwap, TxStatus


class VenueGateway(Protocol):
    """quote, then build (signed, recorded by the caller), then send, then status by signature.

    Building and sending are separate so the caller can persist the signature, signed bytes
    and expiry height before anything reaches the network (the exactly-once rule).
    """

    name: str

    async def quote(self, input_mint: str, output_mint: str, amount_in: int) -> Quote:
        """Return what the venue would pay now; execute nothing."""
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

    async def statuses(self, signatures: list[str]) -> list[TxStatus | None]:
        """Return each signature's landed status, None where the chain has no record."""
        ...

    async def block_height(self) -> int:
        """Return the current block height (a signed swap expires after its last valid one)."""
        ...
