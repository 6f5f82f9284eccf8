"""Unit tests for the API's page cursor: it round-trips an order's position, and only that."""

from __future__ import annotations

import base64
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from core.errors import InvalidInput
from core.orders import Order, OrderStatus, OrderType
from storage.cursor import decode_cursor, encode_cursor

SOL = "So11111111111111111111111111111111111111112"
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
IST = timezone(timedelta(hours=5, minutes=30))


def order(created_at: datetime, order_id: str | None = None) -> Order:
    return Order(
        order_id=order_id or str(uuid.uuid4()), account_id="default", client_order_id=None,
        order_type=OrderType.MARKET, input_mint=SOL, output_mint=USDC, amount_in=10**9,
        slippage_bps=50, status=OrderStatus.CONFIRMED, created_at=created_at,
        updated_at=created_at, seq=3,
    )


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("created_at", [
    datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC),
    datetime(2025, 3, 4, 5, 6, 7, 1, tzinfo=IST),  # another zone, one microsecond
    datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),  # no fraction: isoformat drops it
])
def test_a_cursor_decodes_to_its_orders_position(created_at: datetime) -> None:
    o = order(created_at)
    at, order_id = decode_cursor(encode_cursor(o))
    assert at == o.created_at
    assert at.microsecond == created_at.microsecond
    assert at.utcoffset() == created_at.utcoffset()  # the same zone, not just the same instant
    assert order_id == uuid.UUID(o.order_id)
    assert isinstance(order_id, uuid.UUID)


def test_cursors_keep_the_newest_first_order_of_their_orders() -> None:
    t = datetime(2025, 1, 1, 12, tzinfo=UTC)
    orders = [order(t, "00000000-0000-4000-8000-000000000002"),
              order(t, "00000000-0000-4000-8000-000000000001"),  # same instant: id breaks the tie
              order(t - timedelta(microseconds=1), "ffffffff-ffff-4fff-bfff-ffffffffffff")]
    positions = [decode_cursor(encode_cursor(o)) for o in orders]
    assert positions == sorted(positions, reverse=True)
    assert positions == [(o.created_at, uuid.UUID(o.order_id)) for o in orders]


def test_a_cursor_is_url_safe_and_unpadded() -> None:
    # A timestamp and a UUID never encode to "+" or "/": padding is what could break a URL.
    for created_at in (datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
                       datetime(2025, 3, 4, 5, 6, 7, 5, tzinfo=IST)):
        o = order(created_at)
        raw = f"{o.created_at.isoformat()}|{o.order_id}".encode()
        cursor = encode_cursor(o)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor), cursor
        if len(raw) % 3:  # base64 would pad this one
            assert not cursor.endswith("=")
    assert len(f"{datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC).isoformat()}|{uuid.uuid4()}") % 3


@pytest.mark.parametrize("cursor", [
    "",
    "a",  # not a length base64 can have
    "abc",  # decodes to bytes that are not UTF-8
    "not a cursor!!",
    "é",  # not ASCII
    b64(b"hello"),  # no separator
    b64(b"2025-01-01T00:00:00+00:00|not-a-uuid"),
    b64(b"yesterday|6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"),
    b64(b"2025-01-01T00:00:00+00:00|6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f|more"),
    b64(b"\xff\xfe|\x00"),
])
def test_anything_but_a_cursor_is_invalid_input(cursor: str) -> None:
    with pytest.raises(InvalidInput, match="cursor is not one this API returned"):
        decode_cursor(cursor)
