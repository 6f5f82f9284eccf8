"""Resting orders by pair, sorted by the price that triggers them (issue 16's trigger book).

A limit order rests until the pair's price reaches its limit from below (`AT_OR_ABOVE`: it
sells its input for at least that much output per unit); a stop order until the price falls
to its trigger (`AT_OR_BELOW`). Prices are output per input, in token units.

Each pair keeps two sorted lists, so a price move costs a binary search plus the orders it
actually crosses, never a walk of every resting order: 10,000 orders resting on a pair are
touched only when the price reaches them. `crossed` removes what it returns, so an order is
triggered at most once however often the price crosses it.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

Pair = tuple[str, str]  # (input mint, output mint)


class Side(StrEnum):
    AT_OR_ABOVE = "at_or_above"  # a limit: triggered once the price is at least the threshold
    AT_OR_BELOW = "at_or_below"  # a stop: triggered once the price is at most the threshold


@dataclass(frozen=True)
class Resting:
    """One resting order as the book knows it."""

    order_id: str
    pair: Pair
    side: Side
    threshold: Decimal

    def is_crossed_by(self, price: Decimal) -> bool:
        if self.side is Side.AT_OR_ABOVE:
            return price >= self.threshold
        return price <= self.threshold


# A sort key: the threshold, then arrival, so equal thresholds trigger oldest first.
_Key = tuple[Decimal, int]


class _Ladder:
    """One pair's orders of one side, sorted by threshold."""

    def __init__(self) -> None:
        self.keys: list[_Key] = []
        self.orders: dict[_Key, Resting] = {}

    def add(self, key: _Key, order: Resting) -> None:
        bisect.insort(self.keys, key)
        self.orders[key] = order

    def remove(self, key: _Key) -> None:
        index = bisect.bisect_left(self.keys, key)
        del self.keys[index]
        del self.orders[key]

    def take_at_most(self, price: Decimal) -> list[tuple[_Key, Resting]]:
        """Remove and return the orders whose threshold is at most `price` (lowest first)."""
        end = bisect.bisect_right(self.keys, (price, _LAST))
        taken, self.keys = self.keys[:end], self.keys[end:]
        return [(key, self.orders.pop(key)) for key in taken]

    def take_at_least(self, price: Decimal) -> list[tuple[_Key, Resting]]:
        """Remove and return the orders whose threshold is at least `price` (highest first)."""
        start = bisect.bisect_left(self.keys, (price, _FIRST))
        taken, self.keys = self.keys[start:], self.keys[:start]
        return [(key, self.orders.pop(key)) for key in reversed(taken)]


_FIRST, _LAST = -1, 2**63  # arrival numbers below and above any real one


class TriggerBook:
    """Every resting order, by pair and side, sorted by its threshold."""

    def __init__(self) -> None:
        self._ladders: dict[tuple[Pair, Side], _Ladder] = {}
        self._keys: dict[str, tuple[Pair, Side, _Key]] = {}
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._keys

    def pairs(self) -> set[Pair]:
        """The pairs with a resting order: the only ones whose price must be watched."""
        return {pair for (pair, _), ladder in self._ladders.items() if ladder.keys}

    def add(self, order: Resting) -> None:
        """Rest `order`; a repeat of a resting order id is ignored (an order rests once)."""
        if order.order_id in self._keys:
            return
        key = (order.threshold, next(self._arrivals))
        self._ladders.setdefault((order.pair, order.side), _Ladder()).add(key, order)
        self._keys[order.order_id] = (order.pair, order.side, key)

    def remove(self, order_id: str) -> Resting | None:
        """Take the order out (cancelled, expired); None when it is not resting."""
        found = self._keys.pop(order_id, None)
        if found is None:
            return None
        pair, side, key = found
        ladder = self._ladders[(pair, side)]
        order = ladder.orders[key]
        ladder.remove(key)
        self._drop_if_empty(pair, side)
        return order

    def crossed(self, pair: Pair, price: Decimal) -> list[Resting]:
        """Remove and return the orders of `pair` that `price` triggers, each exactly once:
        limits at or below the price (lowest first), then stops at or above it (highest
        first)."""
        taken: list[tuple[_Key, Resting]] = []
        limits = self._ladders.get((pair, Side.AT_OR_ABOVE))
        if limits is not None:
            taken += limits.take_at_most(price)
            self._drop_if_empty(pair, Side.AT_OR_ABOVE)
        stops = self._ladders.get((pair, Side.AT_OR_BELOW))
        if stops is not None:
            taken += stops.take_at_least(price)
            self._drop_if_empty(pair, Side.AT_OR_BELOW)
        for _, order in taken:
            del self._keys[order.order_id]
        return [order for _, order in taken]

    def _drop_if_empty(self, pair: Pair, side: Side) -> None:
        ladder = self._ladders.get((pair, side))
        if ladder is not None and not ladder.keys:
            del self._ladders[(pair, side)]
