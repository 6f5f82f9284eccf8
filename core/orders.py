"""The order, its statuses, and the one transition table every package consults."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from core.errors import IllegalTransition
from core.quotes import Quote


class OrderType(StrEnum):
    MARKET = "market"


class OrderStatus(StrEnum):
    PENDING = "pending"
    ROUTING = "routing"
    BUILDING = "building"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    SIMULATED = "simulated"  # a dry run: built, verified and simulated, never sent


class Trigger(StrEnum):
    """What happened to an order; the table maps (status, trigger) to the next status."""

    START_ROUTING = "start_routing"
    ROUTE_CHOSEN = "route_chosen"
    TX_SENT = "tx_sent"
    TX_CONFIRMED = "tx_confirmed"
    TX_SIMULATED = "tx_simulated"
    RETRY = "retry"
    FAIL = "fail"


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
}

TERMINAL: frozenset[OrderStatus] = frozenset({S.CONFIRMED, S.FAILED, S.SIMULATED})

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
    events: tuple[OrderEvent, ...] = field(default=(), compare=False)

    @classmethod
    def created(cls, terms: OrderTerms, order_id: str, at: datetime) -> Order:
        """Return the order stored for `terms`: pending, with its first event's seq."""
        return cls(**{name: getattr(terms, name) for name in _TERMS},
                   order_id=order_id, status=S.PENDING, created_at=at, updated_at=at, seq=1)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

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
            failure_reason=change.error if status is S.FAILED else self.failure_reason,
            events=(),
        )
        event = OrderEvent(
            order_id=self.order_id,
            seq=updated.seq,
            status=status,
            at=at,
            attempt=change.attempt,
            venue=change.venue,
            quotes=tuple(q.public() for q in change.quotes) if change.quotes is not None else None,
            signature=change.signature,
            amount_out=change.amount_out,
            price=change.price,
            error=change.error,
            error_class=change.error_class,
        )
        return updated, event

    def _is_repeat(self, change: Change) -> bool:
        if change.trigger is T.RETRY:
            return change.attempt <= self.attempt
        return _TARGET_OF[change.trigger] is self.status and change.attempt == self.attempt


# What a submission answers: the stored order, and True when this request created it (False:
# the same client_order_id was submitted before).
Submission = tuple[Order, bool]
