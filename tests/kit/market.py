"""Fakes of the price watcher's ports: the market it quotes and where its events go."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from core.orders import OrderEvent
from core.quotes import Quote


class FakeMarket:
    """Each pair's price; the quote pays `amount_in x price` (token units, no decimals)."""

    def __init__(self) -> None:
        self.prices: dict[tuple[str, str], Decimal] = {}
        self.calls: Counter[tuple[str, str]] = Counter()

    async def best_quote(self, input_mint: str, output_mint: str, amount_in: int
                         ) -> Quote | None:
        self.calls[(input_mint, output_mint)] += 1
        out = int(amount_in * self.prices[(input_mint, output_mint)])
        return Quote("raydium", "pool", input_mint, output_mint, amount_in, out, 0,
                     Decimal(0), 0, quoted_at=1.0)

    async def price(self, quote: Quote) -> Decimal | None:
        return Decimal(quote.amount_out) / quote.amount_in


class Events:
    def __init__(self) -> None:
        self.published: list[OrderEvent] = []

    def publish(self, event: OrderEvent) -> None:
        self.published.append(event)
