"""Asking every venue for a quote at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from core.errors import DexecError, RetryableError, VenueTimeout, reason
from core.quotes import Quote
from gateways.base import VenueGateway


async def collect_quotes(
    gateways: Sequence[VenueGateway],
    input_mint: str,
    output_mint: str,
    amount_in: int,
    timeout_s: float,
) -> tuple[list[Quote], dict[str, DexecError]]:
    """Quote every venue in parallel; return the quotes and, per venue, why it was skipped."""

    async def one(gateway: VenueGateway) -> Quote:
        try:
            async with asyncio.timeout(timeout_s):
                return await gateway.quote(input_mint, output_mint, amount_in)
        except TimeoutError:
            raise VenueTimeout(f"{gateway.name} quote timed out", venue=gateway.name) from None

    results = await asyncio.gather(*(one(g) for g in gateways), return_exceptions=True)
    quotes: list[Quote] = []
    errors: dict[str, DexecError] = {}
    for gateway, result in zip(gateways, results, strict=True):
        if isinstance(result, Quote):
            quotes.append(result)
        elif isinstance(result, DexecError):
            errors[gateway.name] = result
        elif isinstance(result, Exception):
            errors[gateway.name] = RetryableError(
                f"{gateway.name} failed: {reason(result)}", venue=gateway.name
            )
        else:
            raise result
    return quotes, errors
