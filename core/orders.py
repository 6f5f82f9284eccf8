"""The order, its statuses, and the one transition table every package consults."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from enum import StrEnum
from typing import Any

from core.errors import IllegalTransition
from core.quotes import Quote
from core.trigger_book import Side


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"  # executes once the best net quote pays at least `limit_price`
    STOP = "stop"  # becomes a market (or, with `limit_price`, a limit) order at `trigger_price`


class TimeInForce(StrEnum):
    GTC = "gtc"  # rests until it executes or is cancelled
    GTT = "gtt"  # rests until `expires_at`
    IOC = "ioc"  # one attempt against the current quotes, no waiting


class OrderStatus(StrEnum):
    PENDING = "pending"
    OPEN = "open"  # a limit or stop order resting until the price reaches it
    ROUTING = "routing"
    BUILDING = "building"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    SIMULATED = "simulated"  # a dry run: built, verified and simulated, never sent
    CANCELLED = "cancelled"  # cancelled by its owner before anything was sent
    EXPIRED = "expired"  # its time ran out (gtt), or an ioc order found no price at its limit


class Trigger(StrEnum):
    """What happened to an order; the table maps (status, trigger) to the next status."""

    START_ROUTING = "start_routing"
    ROUTE_CHOSEN = "route_chosen"
    TX_SENT = "tx_sent"
    TX_CONFIRMED = "tx_confirmed"
    TX_SIMULATED = "tx_simulated"
    RETRY = "retry"
    FAIL = "fail"
    REST = "rest"  # a limit or stop order waits for its price
    PRICE_REACHED = "price_reached"  # the price watcher saw a resting order's price
    CANCEL = "cancel"
    EXPIRE = "expire"


S, T = OrderStatus, Trigger

TRANSITIONS: dict[tuple[OrderStatus, Trigger], OrderStatus] = {
    (S.PENDING, T.START_ROUTING): S.ROUTING,
    (S.ROUTING, T.ROUTE_CHOSEN): S.BUILDING,
    (S.BUILDING, T.TX_SENT): S.SUBMITTED,
    (S.SUBMITTED, T.TX_CONFIRMED): S.CONFIRMED,
    # A dry run ends where a live order would send: its transaction is simulated instead.
    (S.BUILDING, T.TX_SIMULATED): S.SIMULATED,
    # A new attempt starts from routing. From SUBMITTED only once the sent transaction
    # provably cannot land (expired and absent); the worker decides that, not the table.
    (S.ROUTING, T.RETRY): S.ROUTING,
    (S.BUILDING, T.RETRY): S.ROUTING,
    (S.SUBMITTED, T.RETRY): S.ROUTING,
    (S.PENDING, T.FAIL): S.FAILED,
    (S.ROUTING, T.FAIL): S.FAILED,
    (S.BUILDING, T.FAIL): S.FAILED,
    (S.SUBMITTED, T.FAIL): S.FAILED,
    # Limit and stop orders rest from the start, and again when the price they were
    # triggered at is gone by the time their own amount is quoted (nothing was signed).
    (S.PENDING, T.REST): S.OPEN,
    (S.ROUTING, T.REST): S.OPEN,
    (S.OPEN, T.PRICE_REACHED): S.ROUTING,
    (S.OPEN, T.FAIL): S.FAILED,
    # Cancel and expiry end an order only while nothing of it can land: a transaction is
    # stored with the change to BUILDING and sent only after it, so from BUILDING on a signed
    # transaction may still land, and the order finishes normally. One signed for an order
    # cancelled meanwhile is refused with its write and never sent.
    (S.PENDING, T.CANCEL): S.CANCELLED,
    (S.OPEN, T.CANCEL): S.CANCELLED,
    (S.ROUTING, T.CANCEL): S.CANCELLED,
    (S.PENDING, T.EXPIRE): S.EXPIRED,
    (S.OPEN, T.EXPIRE): S.EXPIRED,
    (S.ROUTING, T.EXPIRE): S.EXPIRED,
}

TERMINAL: frozenset[OrderStatus] = frozenset(
    {S.CONFIRMED, S.FAILED, S.SIMULATED, S.CANCELLED, S.EXPIRED})
# Where an order is left for good by its owner's cancel (the other statuses answer why not).
CANCELLABLE: frozenset[OrderStatus] = frozenset(
    s for (s, t) in TRANSITIONS if t is T.CANCEL)

_TARGET_OF: dict[Trigger, OrderStatus] = {trigger: to for (_, trigger), to in TRANSITIONS.items()}


def next_status(status: OrderStatus, trigger: Trigger) -> OrderStatus:
    """Return the status after `trigger`, or raise IllegalTransition."""
    try:
        return TRANSITIONS[(status, trigger)]
    except KeyError:
        raise IllegalTransition(f"cannot apply {trigger} to an order that is {status}") from None


@dataclass(frozen=True)
class Change:
    """A trigger plus the facts it brings; fields left None do not apply."""

    trigger: Trigger
    attempt: int
    venue: str | None = None
    quotes: tuple[Quote, ...] | None = None
    signature: str | None = None
    amount_out: int | None = None
    price: Decimal | None = None
    error: str | None = None
    error_class: str | None = None
    # PRICE_REACHED and REST: the quote that crossed (or missed) the order's price. It goes
    # into the event, not into the order's quotes or price (no swap was priced by it).
    observed: Quote | None = None
    observed_price: Decimal | None = None


@dataclass(frozen=True)
class OrderEvent:
    """One status event as stored and as streamed: seq is gapless per order from 1."""

    order_id: str
    seq: int
    status: OrderStatus
    at: datetime
    attempt: int
    venue: str | None = None
    quotes: tuple[dict[str, Any], ...] | None = None
    signature: str | None = None
    amount_out: int | None = None
    price: Decimal | None = None
    error: str | None = None
    error_class: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the wire shape: `{"type": "order", ...}` with only the fields that apply."""
        data: dict[str, Any] = {
            "type": "order",
            "order_id": self.order_id,
            "seq": self.seq,
            "status": str(self.status),
            "at": self.at.isoformat(),
            "attempt": self.attempt,
        }
        optional = {
            "venue": self.venue,
            "quotes": list(self.quotes) if self.quotes is not None else None,
            "signature": self.signature,
            "amount_out": str(self.amount_out) if self.amount_out is not None else None,
            "price": f"{self.price.normalize():f}" if self.price is not None else None,
            "error": self.error,
            "error_class": self.error_class,
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        return data


@dataclass(frozen=True)
class OrderTerms:
    """What a client asked for: the terms an order keeps for its whole life."""

    account_id: str
    client_order_id: str | None
    order_type: OrderType
    input_mint: str
    output_mint: str
    amount_in: int
    slippage_bps: int
    # Route, build, verify and simulate the swap; never send it.
    dry_run: bool = field(default=False, kw_only=True)
    # Prices are output per input in token units. A market order has neither and no
    # time in force (it is one attempt, now).
    limit_price: Decimal | None = field(default=None, kw_only=True)
    trigger_price: Decimal | None = field(default=None, kw_only=True)
    time_in_force: TimeInForce | None = field(default=None, kw_only=True)
    expires_at: datetime | None = field(default=None, kw_only=True)

    @property
    def rests(self) -> bool:
        """True for an order that waits for its price (limit or stop, not ioc)."""
        return self.order_type is not OrderType.MARKET and self.time_in_force is not TimeInForce.IOC

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def min_out_for_limit(self, in_decimals: int, out_decimals: int) -> int:
        """The least output, in base units, that honours `limit_price` (0 without one)."""
        if self.limit_price is None:
            return 0
        wanted = (self.limit_price * Decimal(self.amount_in).scaleb(-in_decimals)
                  ).scaleb(out_decimals)
        return int(wanted.to_integral_value(rounding=ROUND_CEILING))


_TERMS = tuple(f.name for f in fields(OrderTerms))


@dataclass(frozen=True)
class NewOrder(OrderTerms):
    """A validated market order command, ready to persist."""

    def same_request(self, order: Order) -> bool:
        """Return True when `order` was created from an identical request."""
        return (
            self.order_type == order.order_type
            and self.input_mint == order.input_mint
            and self.output_mint == order.output_mint
            and self.amount_in == order.amount_in
            and self.slippage_bps == order.slippage_bps
            and self.dry_run == order.dry_run
            and self.limit_price == order.limit_price
            and self.trigger_price == order.trigger_price
            and self.time_in_force == order.time_in_force
            and self.expires_at == order.expires_at
        )


@dataclass(frozen=True)
class Order(OrderTerms):
    """An order as stored: its terms, where it stands, and what happened to it."""

    order_id: str
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    attempt: int = 0
    seq: int = 0
    venue: str | None = None
    quotes: tuple[Quote, ...] = ()
    signature: str | None = None
    amount_out: int | None = None
    price: Decimal | None = None
    failure_reason: str | None = None
    triggered_at: datetime | None = None  # when a stop order's trigger price was reached
    events: tuple[OrderEvent, ...] = field(default=(), compare=False)

    @classmethod
    def created(cls, terms: OrderTerms, order_id: str, at: datetime) -> Order:
        """Return the order stored for `terms`: pending, with its first event's seq."""
        return cls(**{name: getattr(terms, name) for name in _TERMS},
                   order_id=order_id, status=S.PENDING, created_at=at, updated_at=at, seq=1)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    def resting_side(self) -> tuple[Side, Decimal] | None:
        """Which way the price must move to set this order off, and how far (None: it does
        not wait for a price). A stop waits for its trigger; once triggered, a stop with a
        limit waits as a limit order; a triggered stop without one never waits again."""
        if self.order_type is OrderType.STOP and self.triggered_at is None:
            assert self.trigger_price is not None  # noqa: S101 - validated on submission
            return Side.AT_OR_BELOW, self.trigger_price
        if self.limit_price is not None:
            return Side.AT_OR_ABOVE, self.limit_price
        return None

    def accepts(self, price: Decimal) -> bool:
        """True when `price` (output per input, of this order's own amount) lets it execute
        now: at or above its limit, and for a stop not yet triggered, at or below its
        trigger. A market order, and a triggered stop without a limit, accept any price."""
        if (self.order_type is OrderType.STOP and self.triggered_at is None
                and self.trigger_price is not None and price > self.trigger_price):
            return False
        return self.limit_price is None or price >= self.limit_price

    def apply(self, change: Change, at: datetime) -> tuple[Order, OrderEvent] | None:
        """Apply `change`; return the new order and its event, or None for a repeated change."""
        if self._is_repeat(change):
            return None
        status = next_status(self.status, change.trigger)
        updated = replace(
            self,
            status=status,
            updated_at=at,
            attempt=change.attempt,
            seq=self.seq + 1,
            venue=change.venue if change.venue is not None else self.venue,
            quotes=change.quotes if change.quotes is not None else self.quotes,
            signature=change.signature if change.signature is not None else self.signature,
            amount_out=change.amount_out if change.amount_out is not None else self.amount_out,
            price=change.price if change.price is not None else self.price,
            failure_reason=(change.error if status in (S.FAILED, S.CANCELLED, S.EXPIRED)
                            else self.failure_reason),
            triggered_at=self._triggered_at(change.trigger, at),
            events=(),
        )
        observed = (change.observed.public(),) if change.observed is not None else None
        event = OrderEvent(
            order_id=self.order_id,
            seq=updated.seq,
            status=status,
            at=at,
            attempt=change.attempt,
            venue=change.venue,
            quotes=(tuple(q.public() for q in change.quotes) if change.quotes is not None
                    else observed),
            signature=change.signature,
            amount_out=change.amount_out,
            price=change.price if change.price is not None else change.observed_price,
            error=change.error,
            error_class=change.error_class,
        )
        return updated, event

    def _triggered_at(self, trigger: Trigger, at: datetime) -> datetime | None:
        """A stop is triggered when its price is reached. One without a limit that rests
        again (its swap failed) waits for its trigger again, having no limit to wait for."""
        if self.order_type is not OrderType.STOP:
            return None
        if trigger is T.PRICE_REACHED and self.triggered_at is None:
            return at
        if trigger is T.REST and self.limit_price is None:
            return None
        return self.triggered_at

    def _is_repeat(self, change: Change) -> bool:
        if change.trigger is T.RETRY:
            return change.attempt <= self.attempt
        return _TARGET_OF[change.trigger] is self.status and change.attempt == self.attempt


# What a submission answers: the stored order, and True when this request created it (False:
# the same client_order_id was submitted before).
Submission = tuple[Order, bool]
