"""The order repository: creating orders, and every read of orders, events and swaps.

Status changes and swap records go through `storage.writes` (`write_batch`); rows are mapped
in `storage.rows`; the API's page cursor is `storage.cursor`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from psycopg.rows import dict_row

from core.errors import DexecError, IdempotencyConflict, TransientDatabaseError
from core.orders import (
    TERMINAL,
    NewOrder,
    Order,
    OrderEvent,
    OrderStatus,
    OrderType,
    Submission,
    TimeInForce,
)
from core.quotes import SignedSwap, SwapStatus
from storage.cursor import decode_cursor, encode_cursor
from storage.database import Database, each_on_its_own, keyed, rows_from, rows_param
from storage.rows import (
    EVENT_COLUMNS,
    ORDER_COLUMNS,
    ORDER_INSERT,
    event_from_row,
    order_from_row,
    quote_from_row,
    swap_from_row,
)
from storage.writes import OrderWriter, Write, Written

log = logging.getLogger(__name__)


class OrderRepository:
    """PostgreSQL access for orders; translates psycopg errors into dexec errors."""

    def __init__(self, conninfo: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self.db = Database(keyed(conninfo), min_size=min_size, max_size=max_size)
        self._writer = OrderWriter(self.db)
        self._accounts: set[str] = set()  # accounts known to exist (created on first use)

    async def open(self, wait_s: float = 30.0) -> None:
        """Open the pool and wait until its first connections are ready."""
        await self.db.open(wait_s)

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> bool:
        """Return True when the database answers."""
        try:
            await self.db.open(wait_s=2.0)
            async with self.db.connection() as conn:
                await conn.execute("SELECT 1")
            return True
        except TransientDatabaseError:
            return False

    # -- creating orders --------------------------------------------------------------------

    async def create_orders(self, news: Sequence[NewOrder]) -> list[Submission | DexecError]:
        """Persist new orders, each with its first `pending` event, in one statement.

        Each answer is (order, created) or that item's own DexecError. A repeated
        client_order_id answers the stored order with created=False, or IdempotencyConflict
        when the stored order came from a different request; the same client_order_id twice
        in one batch stores one order.
        """
        return await each_on_its_own(self._create_orders, news)

    async def _create_orders(self, news: Sequence[NewOrder]) -> list[Submission | DexecError]:
        now = datetime.now(UTC)
        orders = [Order.created(new, str(uuid.uuid4()), now) for new in news]
        accounts = sorted({n.account_id for n in news} - self._accounts)
        rows = [
            (o.order_id, o.account_id, o.client_order_id, str(o.order_type), o.input_mint,
             o.output_mint, o.amount_in, o.slippage_bps, str(o.status), now, now, o.dry_run,
             o.limit_price, o.trigger_price,
             str(o.time_in_force) if o.time_in_force is not None else None, o.expires_at)
            for o in orders
        ]
        async with self.db.connection() as conn:
            if accounts:
                await conn.execute(
                    "INSERT INTO accounts (account_id) SELECT unnest(%s::text[])"
                    " ON CONFLICT DO NOTHING", (accounts,))
            # One statement, so atomic without a transaction: the orders, and the first
            # event of each order actually created (a repeated client_order_id adds none).
            names = ", ".join(c for c, _ in ORDER_INSERT)
            cur = await conn.execute(
                f"WITH created AS (INSERT INTO orders ({names}, attempt, seq)"
                f" SELECT *, 0, 1 FROM {rows_from(ORDER_INSERT, 'n')}"
                " ON CONFLICT (account_id, client_order_id) DO NOTHING RETURNING order_id),"
                f" events AS (INSERT INTO order_events ({EVENT_COLUMNS})"
                " SELECT order_id, 1, %s, %s, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
                " FROM created)"
                " SELECT order_id FROM created",
                [rows_param(rows), str(OrderStatus.PENDING), now],
            )
            created = {str(r[0]) for r in await cur.fetchall()}
        self._accounts.update(accounts)
        answers: list[Submission | DexecError] = []
        for new, order in zip(news, orders, strict=True):
            if order.order_id in created:
                first = OrderEvent(order.order_id, 1, OrderStatus.PENDING, now, attempt=0)
                answers.append((replace(order, events=(first,)), True))
                continue
            try:
                answers.append((await self._stored_repeat(new), False))
            except DexecError as exc:
                answers.append(exc)
        return answers

    async def _stored_repeat(self, new: NewOrder) -> Order:
        """Return the stored order that `new` repeats (its client_order_id was taken)."""
        existing = await self.find_by_client_id(new.account_id, new.client_order_id or "")
        if existing is None:  # pragma: no cover - the conflicting row cannot vanish
            raise TransientDatabaseError("order vanished during an idempotent retry")
        if not new.same_request(existing):
            raise IdempotencyConflict(
                f"client_order_id {new.client_order_id!r} was already used for a different"
                f" order ({existing.order_id}); use a new client_order_id"
            )
        return existing

    # -- changing orders ----------------------------------------------------------------------

    async def write_batch(self, ops: Sequence[Write]) -> list[Written | DexecError]:
        """Apply status changes and swap records atomically (see storage.writes)."""
        return await self._writer.write_batch(ops)

    # -- reading orders ---------------------------------------------------------------------

    async def find_by_client_id(self, account_id: str, client_order_id: str) -> Order | None:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT order_id FROM orders WHERE account_id = %s AND client_order_id = %s",
                (account_id, client_order_id),
            )
            row = await cur.fetchone()
        return await self.get_order(str(row[0])) if row else None

    async def get_order(self, order_id: str, *, with_history: bool = True) -> Order | None:
        """Return the order with its events and quotes, or None.

        The three reads share one snapshot: an order whose next event commits between them
        would otherwise come back with an event newer than its own seq and status (a WebSocket
        subscriber would then see that event twice).
        """
        try:
            oid = uuid.UUID(order_id)
        except ValueError:
            return None
        async with self.db.connection(transaction=True) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            await cur.execute(f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = %s", (oid,))
            order_row = await cur.fetchone()
            if order_row is None:
                return None
            if not with_history:
                return order_from_row(order_row)
            await cur.execute(
                f"SELECT {EVENT_COLUMNS} FROM order_events WHERE order_id = %s ORDER BY seq",
                (oid,),
            )
            events = [event_from_row(r) for r in await cur.fetchall()]
            await cur.execute(
                "SELECT q.*, o.input_mint, o.output_mint FROM order_quotes q"
                " JOIN orders o USING (order_id) WHERE order_id = %s ORDER BY attempt, venue",
                (oid,),
            )
            quotes = [quote_from_row(r) for r in await cur.fetchall()]
        return order_from_row(order_row, events, quotes)

    async def get_orders(self, order_ids: Sequence[str]) -> list[Order | None]:
        """Return each order without its history (None where unknown), in one query."""
        wanted: dict[str, uuid.UUID] = {}
        for order_id in order_ids:
            try:
                wanted[order_id] = uuid.UUID(order_id)
            except ValueError:
                continue
        found: dict[str, Order] = {}
        if wanted:
            async with self.db.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ANY(%s)",
                    (list(wanted.values()),),
                )
                found = {str(r["order_id"]): order_from_row(r) for r in await cur.fetchall()}
        return [found.get(str(wanted[i])) if i in wanted else None for i in order_ids]

    async def list_orders(
        self, account_id: str, *, status: OrderStatus | None, limit: int, cursor: str | None
    ) -> tuple[list[Order], str | None]:
        """Return a newest-first page of the account's orders and the cursor of the next."""
        where = ["account_id = %s"]
        params: list[Any] = [account_id]
        if status is not None:
            where.append("status = %s")
            params.append(str(status))
        if cursor:
            at, oid = decode_cursor(cursor)
            where.append("(created_at, order_id) < (%s, %s)")
            params.extend([at, oid])
        params.append(limit + 1)
        async with self.db.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {ORDER_COLUMNS} FROM orders WHERE {' AND '.join(where)}"
                " ORDER BY created_at DESC, order_id DESC LIMIT %s",
                params,
            )
            rows = await cur.fetchall()
        orders = [order_from_row(r) for r in rows[:limit]]
        next_cursor = encode_cursor(orders[-1]) if len(rows) > limit and orders else None
        return orders, next_cursor

    async def open_orders(self) -> list[tuple[str, str]]:
        """Return every non-terminal order as (order_id, account_id), oldest first.

        For dispatch after a restart, and to count each account's open orders again.
        """
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT order_id, account_id FROM orders WHERE status <> ALL(%s)"
                " ORDER BY created_at",
                (sorted(str(s) for s in TERMINAL),),
            )
            return [(str(r[0]), str(r[1])) for r in await cur.fetchall()]

    async def resting_orders(self) -> list[Order]:
        """Return the orders that wait for a price, oldest first: every `open` one, and the
        limit and stop orders (not ioc) still `pending` (created, not yet written open)."""
        async with self.db.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {ORDER_COLUMNS} FROM orders WHERE status = %s OR (status = %s"
                " AND order_type <> %s AND time_in_force IS DISTINCT FROM %s)"
                " ORDER BY created_at",
                (str(OrderStatus.OPEN), str(OrderStatus.PENDING), str(OrderType.MARKET),
                 str(TimeInForce.IOC)))
            return [order_from_row(r) for r in await cur.fetchall()]

    async def sold_since(self, since: datetime) -> dict[str, int]:
        """Amounts of orders created since `since` that have not failed, been cancelled or
        expired (dry runs aside), by input mint: what the daily caps count at start."""
        unsold = [str(OrderStatus.FAILED), str(OrderStatus.CANCELLED), str(OrderStatus.EXPIRED)]
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT input_mint, sum(amount_in) FROM orders WHERE created_at >= %s"
                " AND status <> ALL(%s) AND NOT dry_run GROUP BY input_mint",
                (since, unsold))
            return {str(m): int(total) for m, total in await cur.fetchall()}

    async def events_since(self, order_id: str, since_seq: int) -> list[OrderEvent]:
        """Return the order's events with seq > since_seq, in order."""
        async with self.db.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {EVENT_COLUMNS} FROM order_events"
                " WHERE order_id = %s AND seq > %s ORDER BY seq",
                (uuid.UUID(order_id), since_seq),
            )
            return [event_from_row(r) for r in await cur.fetchall()]

    async def swaps_for_order(self, order_id: str
                              ) -> list[tuple[SignedSwap, int, SwapStatus]]:
        """Return (swap, attempt, status) for each transaction signed for the order."""
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT venue, signature, tx_bytes, last_valid_block_height, min_amount_out,"
                " attempt, status FROM swap_transactions WHERE order_id = %s ORDER BY created_at",
                (uuid.UUID(order_id),),
            )
            return [swap_from_row(r) for r in await cur.fetchall()]
