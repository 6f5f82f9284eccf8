"""Rows of the order tables: their columns, and the mapping between rows and core values."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from core.orders import Order, OrderEvent, OrderStatus, OrderType, TimeInForce
from core.quotes import Quote, SignedSwap, SwapStatus

ORDER_COLUMNS = (
    "order_id, account_id, client_order_id, order_type, input_mint, output_mint, amount_in,"
    " slippage_bps, status, attempt, seq, venue, signature, amount_out, price, failure_reason,"
    " created_at, updated_at, dry_run, limit_price, trigger_price, time_in_force, expires_at,"
    " triggered_at"
)
EVENT_COLUMNS = (
    "order_id, seq, status, at, attempt, venue, quotes, signature, amount_out, price, error,"
    " error_class"
)

# Columns and types of the batched writes (see storage.database.rows_from).
EVENT_INSERT = tuple(zip(
    EVENT_COLUMNS.split(", "),
    ("uuid", "int", "text", "timestamptz", "int", "text", "jsonb", "text", "numeric", "numeric",
     "text", "text"),
    strict=True,
))
ORDER_INSERT = (
    ("order_id", "uuid"), ("account_id", "text"), ("client_order_id", "text"),
    ("order_type", "text"), ("input_mint", "text"), ("output_mint", "text"),
    ("amount_in", "numeric"), ("slippage_bps", "int"), ("status", "text"),
    ("created_at", "timestamptz"), ("updated_at", "timestamptz"), ("dry_run", "bool"),
    ("limit_price", "numeric"), ("trigger_price", "numeric"), ("time_in_force", "text"),
    ("expires_at", "timestamptz"),
)
EXPECTED_UPDATE = (
    ("order_id", "uuid"), ("expected_seq", "int"), ("epoch", "bigint"), ("status", "text"),
    ("attempt", "int"), ("seq", "int"), ("venue", "text"), ("signature", "text"),
    ("amount_out", "numeric"), ("price", "numeric"), ("failure_reason", "text"),
    ("updated_at", "timestamptz"), ("triggered_at", "timestamptz"),
)
SWAP_STATUS_UPDATE = (("status", "text"), ("signature", "text"))
QUOTE_INSERT = (
    ("order_id", "uuid"), ("attempt", "int"), ("venue", "text"), ("pool", "text"),
    ("amount_in", "numeric"), ("amount_out", "numeric"), ("fee", "numeric"),
    ("fee_bps", "numeric"), ("price_impact_bps", "int"), ("chosen", "bool"),
    ("quoted_at", "timestamptz"), ("latency_ms", "float8"),
)
SWAP_INSERT = (
    ("signature", "text"), ("order_id", "uuid"), ("attempt", "int"), ("venue", "text"),
    ("tx_bytes", "bytea"), ("last_valid_block_height", "bigint"),
    ("min_amount_out", "numeric"),
)


def _int(value: Decimal | None) -> int | None:
    return int(value) if value is not None else None


# Columns whose stored value is the core value as it is.
_ORDER_AS_IS = ("account_id", "client_order_id", "input_mint", "output_mint", "slippage_bps",
                "attempt", "seq", "venue", "signature", "price", "failure_reason",
                "created_at", "updated_at", "dry_run", "limit_price", "trigger_price",
                "expires_at", "triggered_at")
_EVENT_AS_IS = ("seq", "at", "attempt", "venue", "signature", "price", "error",
                "error_class")


def order_from_row(row: dict[str, Any], events: Sequence[OrderEvent] = (),
                   quotes: Sequence[Quote] = ()) -> Order:
    """Return the order an `orders` row (ORDER_COLUMNS) describes."""
    return Order(
        **{c: row[c] for c in _ORDER_AS_IS},
        order_id=str(row["order_id"]),
        order_type=OrderType(row["order_type"]),
        amount_in=int(row["amount_in"]),
        status=OrderStatus(row["status"]),
        amount_out=_int(row["amount_out"]),
        time_in_force=(TimeInForce(row["time_in_force"]) if row["time_in_force"] is not None
                       else None),
        quotes=tuple(quotes),
        events=tuple(events),
    )


def event_from_row(row: dict[str, Any]) -> OrderEvent:
    """Return the event an `order_events` row (EVENT_COLUMNS) describes."""
    return OrderEvent(
        **{c: row[c] for c in _EVENT_AS_IS},
        order_id=str(row["order_id"]),
        status=OrderStatus(row["status"]),
        quotes=tuple(row["quotes"]) if row["quotes"] is not None else None,
        amount_out=_int(row["amount_out"]),
    )


def quote_from_row(row: dict[str, Any]) -> Quote:
    """Return a stored quote (an `order_quotes` row joined with its order's mints)."""
    return Quote(
        venue=row["venue"], pool=row["pool"], input_mint=row["input_mint"],
        output_mint=row["output_mint"], amount_in=int(row["amount_in"]),
        amount_out=int(row["amount_out"]), fee=int(row["fee"]), fee_bps=row["fee_bps"],
        price_impact_bps=row["price_impact_bps"], latency_ms=row["latency_ms"],
    )


def event_values(event: OrderEvent) -> tuple[Any, ...]:
    """Return the event's values in EVENT_COLUMNS order."""
    quotes = json.dumps(list(event.quotes)) if event.quotes is not None else None
    return (
        event.order_id, event.seq, str(event.status), event.at, event.attempt, event.venue,
        quotes, event.signature, event.amount_out, event.price, event.error, event.error_class,
    )


def swap_values(order_id: str, attempt: int, swap: SignedSwap) -> tuple[Any, ...]:
    """Return a signed swap's values in SWAP_INSERT order."""
    return (swap.signature, uuid.UUID(order_id), attempt, swap.venue, swap.tx_bytes,
            swap.last_valid_block_height, swap.min_amount_out)


def swap_from_row(row: Sequence[Any]) -> tuple[SignedSwap, int, SwapStatus]:
    """Return (swap, attempt, status) from (venue, signature, tx_bytes, last_valid_block_height,
    min_amount_out, attempt, status)."""
    swap = SignedSwap(row[0], row[1], bytes(row[2]), row[3], int(row[4]))
    return swap, row[5], SwapStatus(row[6])
