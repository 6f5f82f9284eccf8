"""Fakes of the price watcher's ports: the market it quotes, where its events go, and
the conditional writes of its store."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from core.errors import DexecError, LeaseLost
from core.orders import Order, OrderEvent
from core.quotes import Quote
from storage.writes import ApplyChange, Write, Written


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


def write_conditionally(orders: dict[str, Order], ops: Sequence[Write], at: datetime
                        ) -> list[Written | DexecError]:
    """Apply status changes to `orders` as storage.writes does: each only if the stored
    order still has the seq its writer expects (else LeaseLost), a repeat writes nothing."""
    answers: list[Written | DexecError] = []
    for op in ops:
        assert isinstance(op, ApplyChange)
        if orders[op.order_id].seq != op.expected.seq:
            answers.append(LeaseLost("changed concurrently"))
            continue
        result = op.expected.apply(op.change, at)
        if result is not None:
            orders[op.order_id] = result[0]
        answers.append(result)
    return answers
