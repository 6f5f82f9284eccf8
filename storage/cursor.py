"""The API's page cursor: an opaque token pointing just after an order in newest-first order."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

from core.errors import InvalidInput
from core.orders import Order


def encode_cursor(order: Order) -> str:
    """Return an opaque cursor that points just after `order` in newest-first order."""
    raw = f"{order.created_at.isoformat()}|{order.order_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Parse a cursor made by encode_cursor; raise InvalidInput if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, order_id = raw.split("|", 1)
        return datetime.fromisoformat(at), uuid.UUID(order_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this API returned") from None
