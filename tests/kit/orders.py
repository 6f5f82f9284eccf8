"""Orders, submissions and status events as the tests build them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from core.orders import Change, NewOrder, Order, OrderEvent, OrderStatus, OrderType, Trigger
from core.quotes import Quote

SOL = "So11111111111111111111111111111111111111112"  # the SOL mint
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"  # the USDC mint
ONE_SOL = 1_000_000_000  # base units
T0 = datetime(2025, 1, 1, tzinfo=UTC)
# The statuses of an order that confirms at its first attempt, in order (seq 1 to 5).
LIFE = [OrderStatus.PENDING, OrderStatus.ROUTING, OrderStatus.BUILDING, OrderStatus.SUBMITTED,
        OrderStatus.CONFIRMED]

Frame = dict[str, Any]  # an event as it travels (OrderEvent.to_json)


def make_order(
    status: OrderStatus = OrderStatus.PENDING, attempt: int = 0, seq: int = 1, *,
    order_id: str = "order-1", account_id: str = "default", client_order_id: str | None = None,
    amount_in: int = ONE_SOL, slippage_bps: int = 50, created_at: datetime = T0,
    updated_at: datetime | None = None, events: tuple[OrderEvent, ...] = (),
) -> Order:
    """Return a market order selling SOL for USDC (seq 1 is its `pending` event)."""
    return Order(
        order_id=order_id, account_id=account_id, client_order_id=client_order_id,
        order_type=OrderType.MARKET, input_mint=SOL, output_mint=USDC, amount_in=amount_in,
        slippage_bps=slippage_bps, status=status, created_at=created_at,
        updated_at=created_at if updated_at is None else updated_at, attempt=attempt, seq=seq,
        events=events,
    )


def new_order(client_order_id: str | None = None, amount_in: int = ONE_SOL) -> NewOrder:
    """Return a submission of a market order selling SOL for USDC."""
    return NewOrder("default", client_order_id, OrderType.MARKET, SOL, USDC, amount_in, 50)


def created_order(order_id: str, new: NewOrder) -> Order:
    """Return the pending order a store creates for `new`."""
    return Order.created(new, order_id, T0)


def event(order_id: str, seq: int, status: OrderStatus | None = None) -> OrderEvent:
    """Return the order's `seq`th event of attempt 1 (by default the status LIFE gives it)."""
    status = status or LIFE[min(seq, len(LIFE) - 1) - 1]
    return OrderEvent(order_id, seq, status, T0 + timedelta(seconds=seq), attempt=1)


def frame(order_id: str, seq: int, status: str = "routing") -> Frame:
    """Return a minimal published event."""
    return {"type": "order", "order_id": order_id, "seq": seq, "status": status}


def make_quote(venue: str = "raydium", amount_out: int = 150_000_000) -> Quote:
    """Return a venue's quote for selling one SOL for USDC."""
    return Quote(
        venue=venue, pool=f"{venue}-pool", input_mint=SOL, output_mint=USDC,
        amount_in=ONE_SOL, amount_out=amount_out, fee=2_500_000,
        fee_bps=Decimal(25), price_impact_bps=3, payload="secret",
    )


def confirming_changes(quotes: tuple[Quote, ...], *, amount_out: int = 149_900_000,
                       price: Decimal = Decimal("149.9")) -> list[Change]:
    """Return the changes of a first attempt that routes to raydium and confirms."""
    return [
        Change(Trigger.START_ROUTING, 1),
        Change(Trigger.ROUTE_CHOSEN, 1, venue="raydium", quotes=quotes),
        Change(Trigger.TX_SENT, 1, venue="raydium", signature="sig-1"),
        Change(Trigger.TX_CONFIRMED, 1, venue="raydium", signature="sig-1",
               amount_out=amount_out, price=price),
    ]
