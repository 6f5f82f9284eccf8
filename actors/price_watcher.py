"""Resting limit and stop orders: one price per pair, the trigger book, expiry (in the manager).

The watcher runs inside the OrderManager, beside the Dispatcher it hands triggered orders
to. Every resting order of a pair shares one quote per interval (every venue asked at once,
the best net quote taken), so 10,000 orders on 5 pairs cost the venues what 10 do; the
TriggerBook keeps each pair's orders sorted by their price, so a move touches only the
orders it crosses. Every change it makes (pending -> open, open -> routing, open -> expired)
is a conditional write on the order's seq, the same one executors make: an order cancelled,
expired or triggered elsewhere meanwhile is left alone, and re-read to learn where it stands.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from actors.executor import EventSink, MintSource, token_price
from core.errors import DexecError, RetryableError, reason
from core.orders import Change, Order, OrderStatus, Trigger
from core.quotes import Quote, choose_best
from core.tokens import TokenRegistry
from core.trigger_book import Pair, Resting, Side, TriggerBook
from gateways.base import VenueGateway
from gateways.quotes import collect_quotes
from storage.writes import ApplyChange, Write, Written

log = logging.getLogger(__name__)

# Orders per conditional write when many trigger at once. One statement for 10,000 took
# 1.0 s to commit here; ten of 1,000 took 4.1 s, since the first ones' executions ran on
# the same two cores between the writes (dexec bench --limit-orders 10000).
CHUNK = 10_000
YIELD_EVERY = 500  # orders followed between two turns of the event loop
CLOSED_MEMORY = 10_000  # recently closed orders a stale read must not rest again


class RestingStore(Protocol):
    """Where resting orders are read and changed (storage.repository.OrderRepository)."""

    async def write_batch(self, ops: Sequence[Write]) -> list[Written | DexecError]: ...

    async def get_orders(self, order_ids: Sequence[str]) -> list[Order | None]: ...

    async def get_order(self, order_id: str) -> Order | None:
        """The order with its events."""
        ...


class Market(Protocol):
    """The venues as the watcher sees them: the best quote of a pair, and its price."""

    async def best_quote(self, input_mint: str, output_mint: str, amount_in: int
                         ) -> Quote | None: ...

    async def price(self, quote: Quote) -> Decimal | None:
        """Output per input in token units (None: a token's decimals are unknown)."""
        ...


class VenueMarket:
    """Market over the venue gateways: every venue quoted at once, the best net one taken."""

    def __init__(self, gateways: Sequence[VenueGateway], tokens: TokenRegistry, *,
                 timeout_s: float, mints: MintSource | None = None) -> None:
        self._gateways = list(gateways)
        self._tokens = tokens
        self._timeout = timeout_s
        self._mints = mints

    async def best_quote(self, input_mint: str, output_mint: str, amount_in: int
                         ) -> Quote | None:
        quotes, errors = await collect_quotes(self._gateways, input_mint, output_mint,
                                              amount_in, self._timeout)
        for venue, exc in errors.items():
            log.debug("price watch %s -> %s: %s skipped: %s", input_mint, output_mint, venue,
                      reason(exc))
        best = choose_best(quotes)
        return replace(best, quoted_at=time.time()) if best is not None else None

    async def price(self, quote: Quote) -> Decimal | None:
        try:
            return await token_price(self._tokens, self._mints, quote.input_mint,
                                     quote.output_mint, quote.amount_in, quote.amount_out)
        except DexecError:  # the mint lookup failed for now: unpriced this turn
            return None


@dataclass(frozen=True)
class _Seen:
    quote: Quote
    price: Decimal
    at: float  # monotonic


def _utc_now() -> datetime:
    return datetime.now(UTC)


class PriceWatcher:
    """Keep resting orders, watch their pairs' prices, trigger and expire them.

    `on_triggered(order)` gets each order set off (now `routing`, to be dispatched);
    `on_closed(order)` each order it ended or found ended (expired, cancelled, ...).
    """

    def __init__(self, store: RestingStore, market: Market, events: EventSink, *,
                 interval_s: float, on_triggered: Callable[[Order], None],
                 on_closed: Callable[[Order], None],
                 now: Callable[[], datetime] = _utc_now,
                 clock: Callable[[], float] = time.monotonic,
                 cooldown_s: float | None = None) -> None:
        self._store = store
        self._market = market
        self._events = events
        self._interval = interval_s
        self._on_triggered = on_triggered
        self._on_closed = on_closed
        self._now = now
        self._clock = clock
        self._book = TriggerBook()
        self._orders: dict[str, Order] = {}  # resting, as stored: what a write expects
        self._amounts: dict[Pair, dict[str, int]] = {}  # resting amounts by pair
        self._expiry: list[tuple[datetime, str]] = []  # a heap; entries of gone orders linger
        self._new: dict[str, Order] = {}  # pending, to be written open
        self._seen: dict[Pair, _Seen] = {}  # each pair's newest price
        self._fresh: set[Pair] = set()  # pairs with orders rested since their last quote
        # Orders resting at a threshold raised for their own amount's price impact, by pair,
        # with the amount the pair was watched at then (a new watched amount undoes it).
        self._raised: dict[Pair, dict[str, tuple[int, Decimal]]] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._cooling: dict[str, Order] = {}  # rested after a failure, waiting to rest
        self._cooldown = max(1.0, 10 * interval_s) if cooldown_s is None else cooldown_s
        self._wake = asyncio.Event()
        self.last_trigger: dict[str, float | int] = {}  # the latest price move's figures
        self.quotes = 0  # pair quotes asked so far (each asks every venue once)

    def __len__(self) -> int:
        """Orders resting here (or about to): they do not count as work in flight."""
        return len(self._orders) + len(self._new) + len(self._cooling)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._orders or order_id in self._new or order_id in self._cooling

    # -- what the dispatcher hands over ----------------------------------------------------

    def submit(self, order: Order) -> None:
        """Rest a new (pending) limit or stop order: written `open` on the next turn."""
        if order.order_id not in self:
            self._new[order.order_id] = order
            self._wake.set()

    def rest(self, order: Order, threshold: tuple[Decimal, int] | None = None) -> None:
        """Rest an `open` order as stored. `threshold`: the price it waits for instead of its
        own, and the amount the pair was watched at when that was worked out."""
        if order.order_id in self._orders or order.order_id in self._closed:
            return
        side = order.resting_side()
        if side is None:  # nothing to wait for (never expected): let an executor decide
            log.warning("order %s is open but waits for no price; dispatching it",
                        order.order_id)
            self._on_triggered(order)
            return
        pair = (order.input_mint, order.output_mint)
        self._book.add(Resting(order.order_id, pair, side[0],
                               side[1] if threshold is None else threshold[0]))
        if threshold is not None:
            self._raised.setdefault(pair, {})[order.order_id] = (threshold[1], side[1])
        self._orders[order.order_id] = order
        self._amounts.setdefault(pair, {})[order.order_id] = order.amount_in
        self._fresh.add(pair)
        if order.expires_at is not None:
            heapq.heappush(self._expiry, (order.expires_at, order.order_id))
        self._wake.set()

    def remove(self, order_id: str) -> Order | None:
        """Take an order out (it is being cancelled); None when it was not resting."""
        new = self._new.pop(order_id, None)
        self._book.remove(order_id)
        return self._forget(order_id) or new

    def closed(self, order_id: str) -> None:
        """The order ended: a copy read before that must never rest again."""
        self.remove(order_id)
        self._closed[order_id] = None
        if len(self._closed) > CLOSED_MEMORY:
            self._closed.popitem(last=False)

    def _forget(self, order_id: str) -> Order | None:
        """Drop a resting order's copy and amount (the book no longer holds it)."""
        order = self._orders.pop(order_id, None)
        if order is not None:
            pair = (order.input_mint, order.output_mint)
            self._raised.get(pair, {}).pop(order_id, None)
            amounts = self._amounts[pair]
            del amounts[order_id]
            if not amounts:  # no longer watched: its last price is not current any more
                del self._amounts[pair]
                self._seen.pop(pair, None)
        return order

    async def rest_again(self, order_id: str) -> None:
        """An executor found the price gone and rested the order again: watch it again.

        Its own amount was priced below the pair's watched price (the watcher quotes the
        smallest resting amount): it waits for the watched price that brings its own to its
        limit, so one price does not trigger it over and over.
        """
        order = await self._store.get_order(order_id)
        if order is None:
            return
        if order.status is not OrderStatus.OPEN:
            self._settled(order)
            return
        last = order.events[-1] if order.events else None
        if last is not None and last.error is not None:
            # Rested after a failed swap or a venue's error, not a missed price: it waits a
            # while before the price may set it off again, so a market hovering at its limit
            # cannot have it signed (and pay fees) over and over.
            self._cooling[order_id] = order
            try:
                await asyncio.sleep(self._cooldown)
            finally:
                self._cooling.pop(order_id, None)
        side = order.resting_side()
        seen = self._seen.get((order.input_mint, order.output_mint))
        own = last.price if last is not None else None
        threshold = None
        if (side is not None and side[0] is Side.AT_OR_ABOVE and seen is not None
                and own is not None and 0 < own < seen.price):
            threshold = (side[1] * seen.price / own, seen.quote.amount_in)
        self.rest(replace(order, events=()), threshold)

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # the database or a venue failed: try again next turn
                log.exception("price watch failed; retrying")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()

    async def tick(self) -> None:
        """Write new orders open, expire what is due, then price every pair due a quote."""
        await self._open_new()
        await self._expire_due()
        now = self._clock()
        due = [p for p in self._amounts
               if p not in self._seen or now - self._seen[p].at >= self._interval]
        for pair in list(self._fresh):
            if pair in self._seen and pair not in due:  # a fresh price serves new orders
                await self._cross(pair, self._seen[pair])
        self._fresh.clear()
        if due:
            await asyncio.gather(*(self._watch(pair) for pair in due))

    async def _watch(self, pair: Pair) -> None:
        amounts = self._amounts.get(pair)
        if not amounts:
            return
        watched = min(amounts.values())
        self._lower_raised(pair, watched)
        self.quotes += 1
        quote = await self._market.best_quote(pair[0], pair[1], watched)
        if quote is None:
            return
        price = await self._market.price(quote)
        if price is None:
            log.warning("no decimals for %s -> %s: its resting orders cannot be priced", *pair)
            return
        seen = _Seen(quote, price, self._clock())
        self._seen[pair] = seen
        await self._cross(pair, seen)

    def _lower_raised(self, pair: Pair, watched: int) -> None:
        """A raised threshold holds only for the amount it was measured at: when the pair is
        watched at another amount, its orders wait for their own limit again."""
        raised = self._raised.get(pair)
        if not raised:
            return
        for order_id, (amount, limit) in list(raised.items()):
            if amount != watched and order_id in self._orders:
                order = self._orders[order_id]
                self._book.remove(order_id)
                del raised[order_id]
                side = order.resting_side()
                if side is not None:
                    self._book.add(Resting(order_id, pair, side[0], limit))

    async def _cross(self, pair: Pair, seen: _Seen) -> None:
        crossed = self._book.crossed(pair, seen.price)
        if not crossed:
            return
        orders = [order for r in crossed if (order := self._forget(r.order_id))]
        now = self._now()
        expired = [o for o in orders if o.expired(now)]
        if expired:  # never executed late: expiry comes first
            await self._write(expired, lambda o: Change(Trigger.EXPIRE, o.attempt,
                                                        error="expired at its time"))
        live = [o for o in orders if not o.expired(now)]
        started = self._clock()
        for k in range(0, len(live), CHUNK):
            # Each time it is set off is a new attempt: the swaps of an earlier one are done.
            await self._write(live[k:k + CHUNK], lambda o: Change(
                Trigger.PRICE_REACHED, o.attempt + 1, observed=seen.quote,
                observed_price=seen.price), unknown=self._on_triggered)
        if live:
            self.last_trigger = {"orders": len(live), "quoted_at": seen.quote.quoted_at,
                                 "written_s": self._clock() - started,
                                 "written_at": time.time()}
            log.info("%d resting orders of %s -> %s set off at %s", len(live), *pair,
                     seen.price)

    async def _open_new(self) -> None:
        if not self._new:
            return
        new, self._new = list(self._new.values()), {}
        now = self._now()
        await self._write([o for o in new if o.expired(now)], lambda o: Change(
            Trigger.EXPIRE, o.attempt, error="expired before it could rest"))
        await self._write([o for o in new if not o.expired(now)],
                          lambda o: Change(Trigger.REST, o.attempt))

    async def _expire_due(self) -> None:
        now = self._now()
        due: list[Order] = []
        while self._expiry and self._expiry[0][0] <= now:
            _, order_id = heapq.heappop(self._expiry)
            order = self._orders.get(order_id)
            if order is not None and order.expired(now):
                self.remove(order_id)
                due.append(order)
        if due:
            await self._write(due, lambda o: Change(Trigger.EXPIRE, o.attempt,
                                                    error="expired at its time"))

    async def _write(self, orders: list[Order], change: Callable[[Order], Change], *,
                     unknown: Callable[[Order], None] | None = None) -> None:
        """Apply one change to each order, all in one statement, and follow each outcome.

        Whatever fails, every order is followed somewhere: where a re-read says it is, or,
        when even that fails, to `unknown` (the executor of a maybe-triggered order reads it
        and answers `open` if it still rests) or back to where it was.
        """
        if not orders:
            return
        answers: list[Written | DexecError]
        try:
            answers = list(await self._store.write_batch(
                [ApplyChange(o.order_id, change(o), None, o) for o in orders]))
        except Exception as exc:  # unknown whether written: re-read them below
            log.warning("resting orders may not have changed (%s); re-reading them",
                        reason(exc))
            answers = [RetryableError(reason(exc))] * len(orders)
        unsure: list[str] = []
        for k, (order, answer) in enumerate(zip(orders, answers, strict=True)):
            if k and not k % YIELD_EVERY:
                await asyncio.sleep(0)  # thousands at once: let submissions in meanwhile
            if isinstance(answer, tuple):
                updated, event = answer
                self._events.publish(event)
                self._settled(updated)
            else:  # a repeat, or changed meanwhile (cancelled, triggered): see where it is
                unsure.append(order.order_id)
        if not unsure:
            return
        try:
            found = await self._store.get_orders(unsure)
        except Exception as exc:
            log.warning("resting orders not re-read (%s)", reason(exc))
            # Each as it was, or where `unknown` sends it: the writes were conditional, so
            # if one was made after all, the next one fails and the order is read again.
            before = {o.order_id: o for o in orders}
            for order_id in unsure:
                (unknown or self._settled)(before[order_id])
            return
        for current in found:
            if current is not None:
                self._settled(current)

    def follow(self, order: Order) -> None:
        """Take an order as it now stands: rest it, open it, hand it over or close it."""
        self._settled(order)

    def _settled(self, order: Order) -> None:
        """Follow an order to where it now stands."""
        if order.status is OrderStatus.OPEN:
            self.rest(order)
        elif order.status is OrderStatus.PENDING and order.rests:
            self.submit(order)
        elif order.is_terminal:
            self._on_closed(order)
        else:
            self._on_triggered(order)
