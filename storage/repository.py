"""The order repository: every read and write of orders, events, quotes and swaps."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from psycopg.rows import dict_row

from core.errors import (
    DexecError,
    IdempotencyConflict,
    InvalidInput,
    LeaseLost,
    OrderNotFound,
    TransientDatabaseError,
)
from core.orders import (
    TERMINAL,
    Change,
    NewOrder,
    Order,
    OrderEvent,
    OrderStatus,
    OrderType,
)
from core.quotes import Quote, SignedSwap
from storage.database import Database, rows_from, rows_param

log = logging.getLogger(__name__)

ORDER_COLUMNS = (
    "order_id, account_id, client_order_id, order_type, input_mint, output_mint, amount_in,"
    " slippage_bps, status, attempt, seq, venue, signature, amount_out, price, failure_reason,"
    " created_at, updated_at"
)
_EVENT_COLUMNS = (
    "order_id, seq, status, at, attempt, venue, quotes, signature, amount_out, price, error,"
    " error_class"
)
_TERMINAL = [str(s) for s in TERMINAL]


def _now() -> datetime:
    return datetime.now(UTC)


def _int(value: Decimal | None) -> int | None:
    return int(value) if value is not None else None


def order_from_row(row: dict[str, Any], events: Sequence[OrderEvent] = (),
                    quotes: Sequence[Quote] = ()) -> Order:
    return Order(
        order_id=str(row["order_id"]),
        account_id=row["account_id"],
        client_order_id=row["client_order_id"],
        order_type=OrderType(row["order_type"]),
        input_mint=row["input_mint"],
        output_mint=row["output_mint"],
        amount_in=int(row["amount_in"]),
        slippage_bps=row["slippage_bps"],
        status=OrderStatus(row["status"]),
        attempt=row["attempt"],
        seq=row["seq"],
        venue=row["venue"],
        signature=row["signature"],
        amount_out=_int(row["amount_out"]),
        price=row["price"],
        failure_reason=row["failure_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        quotes=tuple(quotes),
        events=tuple(events),
    )


def _event_from_row(row: dict[str, Any]) -> OrderEvent:
    return OrderEvent(
        order_id=str(row["order_id"]),
        seq=row["seq"],
        status=OrderStatus(row["status"]),
        at=row["at"],
        attempt=row["attempt"],
        venue=row["venue"],
        quotes=tuple(row["quotes"]) if row["quotes"] is not None else None,
        signature=row["signature"],
        amount_out=_int(row["amount_out"]),
        price=row["price"],
        error=row["error"],
        error_class=row["error_class"],
    )


def _event_params(event: OrderEvent) -> tuple[Any, ...]:
    quotes = json.dumps(list(event.quotes)) if event.quotes is not None else None
    return (
        event.order_id, event.seq, str(event.status), event.at, event.attempt, event.venue,
        quotes, event.signature, event.amount_out, event.price, event.error, event.error_class,
    )


# Columns of the batched writes (see storage.database.rows_from).
_EVENT_INSERT = tuple(zip(
    _EVENT_COLUMNS.split(", "),
    ("uuid", "int", "text", "timestamptz", "int", "text", "jsonb", "text", "numeric", "numeric",
     "text", "text"),
    strict=True,
))
_ORDER_INSERT = (
    ("order_id", "uuid"), ("account_id", "text"), ("client_order_id", "text"),
    ("order_type", "text"), ("input_mint", "text"), ("output_mint", "text"),
    ("amount_in", "numeric"), ("slippage_bps", "int"), ("status", "text"),
    ("created_at", "timestamptz"), ("updated_at", "timestamptz"),
)
_EXPECTED_UPDATE = (
    ("order_id", "uuid"), ("expected_seq", "int"), ("epoch", "bigint"), ("status", "text"),
    ("attempt", "int"), ("seq", "int"), ("venue", "text"), ("signature", "text"),
    ("amount_out", "numeric"), ("price", "numeric"), ("failure_reason", "text"),
    ("updated_at", "timestamptz"),
)
_QUOTE_INSERT = (
    ("order_id", "uuid"), ("attempt", "int"), ("venue", "text"), ("pool", "text"),
    ("amount_in", "numeric"), ("amount_out", "numeric"), ("fee", "numeric"),
    ("fee_bps", "numeric"), ("price_impact_bps", "int"), ("chosen", "bool"),
    ("quoted_at", "timestamptz"), ("latency_ms", "float8"),
)
_SWAP_INSERT = (
    ("signature", "text"), ("order_id", "uuid"), ("attempt", "int"), ("venue", "text"),
    ("tx_bytes", "bytea"), ("last_valid_block_height", "bigint"),
    ("min_amount_out", "numeric"),
)


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


class OrderRepository:
    """PostgreSQL access for orders; translates psycopg errors into dexec errors."""

    def __init__(self, conninfo: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self.db = Database(conninfo, min_size=min_size, max_size=max_size)
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

    # -- orders ---------------------------------------------------------------------------

    async def create_order(self, new: NewOrder) -> tuple[Order, bool]:
        """Persist `new` with its first `pending` event; return (order, created).

        A repeated client_order_id returns the stored order with created=False, or raises
        IdempotencyConflict when the stored order came from a different request.
        """
        result: tuple[Order, bool] = _one(await self.create_orders([new]))
        return result

    async def create_orders(self, news: Sequence[NewOrder]) -> list[Any]:
        """Persist many new orders in one transaction; answer each like create_order.

        Each answer is (order, created) or the DexecError of that item alone (an
        IdempotencyConflict). The same client_order_id twice in one batch stores one order.
        """
        now = _now()
        orders = [
            Order(
                order_id=str(uuid.uuid4()), account_id=new.account_id,
                client_order_id=new.client_order_id, order_type=new.order_type,
                input_mint=new.input_mint, output_mint=new.output_mint,
                amount_in=new.amount_in, slippage_bps=new.slippage_bps,
                status=OrderStatus.PENDING, created_at=now, updated_at=now, seq=1,
            )
            for new in news
        ]
        created: set[str] = set()
        accounts = sorted({n.account_id for n in news} - self._accounts)
        rows = [
            (o.order_id, o.account_id, o.client_order_id, str(o.order_type), o.input_mint,
             o.output_mint, o.amount_in, o.slippage_bps, str(o.status), now, now)
            for o in orders
        ]
        async with self.db.connection() as conn:
            if accounts:
                await conn.execute(
                    "INSERT INTO accounts (account_id) SELECT unnest(%s::text[])"
                    " ON CONFLICT DO NOTHING", (accounts,))
            # One statement, so atomic without a transaction: the orders, and the first
            # event of each order actually created (a repeated client_order_id adds none).
            names = ", ".join(c for c, _ in _ORDER_INSERT)
            cur = await conn.execute(
                f"WITH created AS (INSERT INTO orders ({names}, attempt, seq)"
                f" SELECT *, 0, 1 FROM {rows_from(_ORDER_INSERT, 'n')}"
                " ON CONFLICT (account_id, client_order_id) DO NOTHING RETURNING order_id),"
                f" events AS (INSERT INTO order_events ({_EVENT_COLUMNS})"
                " SELECT order_id, 1, %s, %s, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
                " FROM created)"
                " SELECT order_id FROM created",
                [rows_param(rows), str(OrderStatus.PENDING), now],
            )
            created = {str(r[0]) for r in await cur.fetchall()}
        events = [
            OrderEvent(o.order_id, 1, OrderStatus.PENDING, now, attempt=0)
            for o in orders if o.order_id in created
        ]
        self._accounts.update(accounts)
        first_event = {e.order_id: e for e in events}
        answers: list[Any] = []
        for new, order in zip(news, orders, strict=True):
            if order.order_id in created:
                answers.append((_with_events(order, [first_event[order.order_id]]), True))
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

    async def find_by_client_id(self, account_id: str, client_order_id: str) -> Order | None:
        async with self.db.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {ORDER_COLUMNS} FROM orders"
                " WHERE account_id = %s AND client_order_id = %s",
                (account_id, client_order_id),
            )
            row = await cur.fetchone()
        return await self.get_order(str(row["order_id"])) if row else None

    async def get_order(self, order_id: str, *, with_history: bool = True) -> Order | None:
        """Return the order with its events and quotes, or None."""
        try:
            oid = uuid.UUID(order_id)
        except ValueError:
            return None
        async with self.db.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = %s",
                (oid,),
            )
            order_row = await cur.fetchone()
            if order_row is None:
                return None
            if not with_history:
                return order_from_row(order_row)
            await cur.execute(
                f"SELECT {_EVENT_COLUMNS} FROM order_events"
                " WHERE order_id = %s ORDER BY seq",
                (oid,),
            )
            events = [_event_from_row(r) for r in await cur.fetchall()]
            await cur.execute(
                "SELECT q.*, o.input_mint, o.output_mint FROM order_quotes q"
                " JOIN orders o USING (order_id) WHERE order_id = %s ORDER BY attempt, venue",
                (oid,),
            )
            quotes = [
                Quote(
                    venue=r["venue"], pool=r["pool"], input_mint=r["input_mint"],
                    output_mint=r["output_mint"], amount_in=int(r["amount_in"]),
                    amount_out=int(r["amount_out"]), fee=int(r["fee"]), fee_bps=r["fee_bps"],
                    price_impact_bps=r["price_impact_bps"], latency_ms=r["latency_ms"],
                )
                for r in await cur.fetchall()
            ]
        return order_from_row(order_row, events, quotes)

    async def get_orders(self, order_ids: Sequence[str]) -> list[Order | None]:
        """Return each order without its history (None where unknown), in one query."""
        wanted: dict[str, uuid.UUID] = {}
        for order_id in order_ids:
            with contextlib.suppress(ValueError):
                wanted[order_id] = uuid.UUID(order_id)
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

    async def open_order_ids(self) -> list[str]:
        """Return every non-terminal order id, oldest first (for dispatch after a restart)."""
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT order_id FROM orders WHERE status <> ALL(%s) ORDER BY created_at",
                (_TERMINAL,),
            )
            return [str(r[0]) for r in await cur.fetchall()]

    async def events_since(self, order_id: str, since_seq: int) -> list[OrderEvent]:
        """Return the order's events with seq > since_seq, in order."""
        async with self.db.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {_EVENT_COLUMNS} FROM order_events"
                " WHERE order_id = %s AND seq > %s ORDER BY seq",
                (uuid.UUID(order_id), since_seq),
            )
            return [_event_from_row(r) for r in await cur.fetchall()]

    # -- status changes and swap records: one transaction per batch ---------------------------

    async def apply_change(
        self, order_id: str, change: Change, *, epoch: int | None = None,
        expected: Order | None = None,
    ) -> tuple[Order, OrderEvent] | None:
        """Apply `change` to the order and write its event in one statement.

        Returns None when the change was already applied (a repeat is a no-op). With
        `epoch`, raises LeaseLost unless the caller still holds the order's newest lease.
        The change is computed from `expected` (the order as the caller last saw it; without
        it, the order is read first) and written only if the stored order is still exactly
        that (same seq); LeaseLost if the order moved meanwhile.
        """
        result: tuple[Order, OrderEvent] | None = _one(
            await self.write_batch([ApplyChange(order_id, change, epoch, expected)]))
        return result

    async def record_swap(
        self, order_id: str, attempt: int, swap: SignedSwap, *, epoch: int | None = None
    ) -> None:
        """Persist a signed transaction before it is sent (the exactly-once rule).

        With `epoch`, raises LeaseLost (and stores nothing) unless the caller still holds
        the order's newest lease: a superseded executor can never add a transaction.
        """
        _one(await self.write_batch([RecordSwap(order_id, attempt, swap, epoch)]))

    async def set_swap_status(self, signature: str, status: str) -> None:
        _one(await self.write_batch([SetSwapStatus(signature, status)]))

    async def write_batch(self, ops: Sequence[Write]) -> list[Any]:
        """Apply many writes of many orders atomically; answer each in order.

        Each answer is what the single call returns, or the DexecError that item raised; such
        an item writes nothing and the others go on. A batch is one statement (see
        _write_expected); a change that does not say what it expects is made from the order
        as stored when its statement is prepared, and several changes to one order go out
        in successive statements, each seeing the one before.
        """
        answers: list[Any] = [None] * len(ops)
        waiting = list(enumerate(ops))
        while waiting:
            this_round: list[tuple[int, Write]] = []
            later: list[tuple[int, Write]] = []
            changing: set[str] = set()
            for k, op in waiting:
                if isinstance(op, ApplyChange):
                    if op.order_id in changing:
                        later.append((k, op))
                        continue
                    changing.add(op.order_id)
                this_round.append((k, op))
            this_round = await self._with_expected(this_round, answers)
            for (k, _), answer in zip(this_round, await self._write_expected(
                    [op for _, op in this_round]), strict=True):
                answers[k] = answer
            waiting = later
        return answers

    async def _with_expected(self, ops: list[tuple[int, Write]], answers: list[Any]
                             ) -> list[tuple[int, Write]]:
        """Give each change without `expected` the order as stored now (OrderNotFound if
        there is none, answered at once and dropped from the batch)."""
        unknown = sorted({op.order_id for _, op in ops
                          if isinstance(op, ApplyChange) and op.expected is None})
        if not unknown:
            return ops
        stored = dict(zip(unknown, await self.get_orders(unknown), strict=True))
        kept: list[tuple[int, Write]] = []
        for k, op in ops:
            if isinstance(op, ApplyChange) and op.expected is None:
                current = stored[op.order_id]
                if current is None:
                    answers[k] = OrderNotFound(f"order {op.order_id} does not exist")
                    continue
                op = replace(op, expected=current)
            kept.append((k, op))
        return kept

    async def _write_expected(self, ops: Sequence[Write]) -> list[Any]:
        """Write a batch in one statement, each change conditional on what its writer expects.

        An order is updated only if its stored seq is the one its executor last saw and its
        lease epoch is the executor's (fencing); its event and quotes are inserted only for
        orders so updated. A swap is recorded only while its order's epoch is the writer's,
        checked under a share lock, so a lease taken meanwhile waits for the record (and sees
        it) or the record is refused. Whatever was not written is looked up afterwards to
        tell an unknown order, a lost lease and a concurrent change apart.
        """
        now = _now()
        answers: list[Any] = [None] * len(ops)
        updates: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        quotes: list[tuple[Any, ...]] = []
        swaps: list[tuple[Any, ...]] = []
        statuses: list[tuple[str, str]] = []
        changed: dict[int, ApplyChange] = {}
        recorded: dict[int, RecordSwap] = {}
        for k, op in enumerate(ops):
            if isinstance(op, SetSwapStatus):
                statuses.append((op.status, op.signature))
            elif isinstance(op, RecordSwap):
                swaps.append((*_swap_params(op), op.epoch))
                recorded[k] = op
            else:
                assert op.expected is not None  # noqa: S101 - checked by write_batch
                try:
                    result = op.expected.apply(op.change, now)
                except DexecError as exc:
                    answers[k] = exc
                    continue
                if result is None:
                    continue  # a repeat: nothing to write
                order, event = result
                updates.append((
                    op.order_id, op.expected.seq, op.epoch, str(order.status), order.attempt,
                    order.seq, order.venue, order.signature, order.amount_out, order.price,
                    order.failure_reason, order.updated_at,
                ))
                events.append(_event_params(event))
                quotes.extend(_quote_params(op, event))
                answers[k] = result
                changed[k] = op
        parts: list[str] = []
        params: list[Any] = []
        returning: list[str] = []
        if updates:
            parts.append(
                "upd AS (UPDATE orders o SET status = v.status, attempt = v.attempt,"
                " seq = v.seq, venue = v.venue, signature = v.signature,"
                " amount_out = v.amount_out, price = v.price,"
                " failure_reason = v.failure_reason, updated_at = v.updated_at"
                f" FROM {rows_from(_EXPECTED_UPDATE, 'v')} WHERE o.order_id = v.order_id"
                " AND o.seq = v.expected_seq"
                " AND (v.epoch IS NULL OR o.lease_epoch = v.epoch) RETURNING o.order_id)"
            )
            params.append(rows_param(updates))
            parts.append(
                f"ev AS (INSERT INTO order_events ({_EVENT_COLUMNS}) SELECT e.* FROM"
                f" {rows_from(_EVENT_INSERT, 'e')}"
                " WHERE e.order_id IN (SELECT order_id FROM upd))"
            )
            params.append(rows_param(events))
            if quotes:
                names = ", ".join(c for c, _ in _QUOTE_INSERT)
                parts.append(
                    f"qt AS (INSERT INTO order_quotes ({names}) SELECT q.* FROM"
                    f" {rows_from(_QUOTE_INSERT, 'q')}"
                    " WHERE q.order_id IN (SELECT order_id FROM upd) ON CONFLICT DO NOTHING)"
                )
                params.append(rows_param(quotes))
            returning.append("SELECT 'o', order_id::text FROM upd")
        if swaps:
            names = ", ".join(c for c, _ in _SWAP_INSERT)
            columns = (*_SWAP_INSERT, ("epoch", "bigint"))
            parts.append(
                f"sw AS (INSERT INTO swap_transactions ({names})"
                f" SELECT {', '.join('s.' + c for c, _ in _SWAP_INSERT)}"
                f" FROM {rows_from(columns, 's')} WHERE EXISTS (SELECT 1 FROM orders o"
                " WHERE o.order_id = s.order_id"
                " AND (s.epoch IS NULL OR o.lease_epoch = s.epoch) FOR SHARE)"
                " ON CONFLICT (signature) DO NOTHING RETURNING signature)"
            )
            params.append(rows_param(swaps))
            returning.append("SELECT 's', signature FROM sw")
        if statuses:
            parts.append(
                "st AS (UPDATE swap_transactions t SET status = x.status, updated_at = now()"
                f" FROM {rows_from((('status', 'text'), ('signature', 'text')), 'x')}"
                " WHERE t.signature = x.signature)"
            )
            params.append(rows_param(statuses))
        if not parts:
            return answers
        final = " UNION ALL ".join(returning) or "SELECT NULL, NULL WHERE false"
        async with self.db.connection() as conn:
            cur = await conn.execute(f"WITH {', '.join(parts)} {final}", params)
            written = {(kind, key) for kind, key in await cur.fetchall()}
        unwritten = {k: op.order_id for k, op in changed.items()
                     if ("o", op.order_id) not in written}
        unwritten |= {k: op.order_id for k, op in recorded.items()
                      if ("s", op.swap.signature) not in written}
        if unwritten:
            await self._explain_unwritten(ops, unwritten, answers)
        return answers

    async def _explain_unwritten(self, ops: Sequence[Write], unwritten: dict[int, str],
                                 answers: list[Any]) -> None:
        """Answer each write that was not made with why (or None: a swap recorded before)."""
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT order_id::text, seq, lease_epoch FROM orders WHERE order_id = ANY(%s)",
                ([uuid.UUID(i) for i in set(unwritten.values())],))
            stored = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}
        for k, order_id in unwritten.items():
            op = ops[k]
            assert isinstance(op, ApplyChange | RecordSwap)  # noqa: S101 - by construction
            if order_id not in stored:
                answers[k] = OrderNotFound(f"order {order_id} does not exist")
                continue
            seq, epoch = stored[order_id]
            try:
                _check_epoch(order_id, epoch, op.epoch)
            except LeaseLost as exc:
                answers[k] = exc
                continue
            if isinstance(op, ApplyChange):
                answers[k] = LeaseLost(
                    f"order {order_id} changed concurrently (stored seq {seq}, expected"
                    f" {op.expected.seq if op.expected else '?'})")
            else:
                answers[k] = None  # the same signature was recorded before: a repeat

    # -- swap transactions ----------------------------------------------------------------

    async def swaps_for_order(self, order_id: str) -> list[tuple[SignedSwap, int, str]]:
        """Return (swap, attempt, status) for each transaction signed for the order."""
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT venue, signature, tx_bytes, last_valid_block_height, min_amount_out,"
                " attempt, status FROM swap_transactions WHERE order_id = %s ORDER BY created_at",
                (uuid.UUID(order_id),),
            )
            rows = await cur.fetchall()
        return [
            (SignedSwap(r[0], r[1], bytes(r[2]), r[3], int(r[4])), r[5], r[6]) for r in rows
        ]


@dataclass(frozen=True)
class ApplyChange:
    """A status change of one order (see OrderRepository.apply_change)."""

    order_id: str
    change: Change
    epoch: int | None = None
    expected: Order | None = None  # the order as its executor knows it: no read first


@dataclass(frozen=True)
class RecordSwap:
    """A signed transaction to persist before it is sent (see OrderRepository.record_swap)."""

    order_id: str
    attempt: int
    swap: SignedSwap
    epoch: int | None = None


@dataclass(frozen=True)
class SetSwapStatus:
    """What became of a recorded transaction."""

    signature: str
    status: str

    @property
    def order_id(self) -> None:
        return None


Write = ApplyChange | RecordSwap | SetSwapStatus


def _one(answers: list[Any]) -> Any:
    if isinstance(answers[0], BaseException):
        raise answers[0]
    return answers[0]


def _swap_params(op: RecordSwap) -> tuple[Any, ...]:
    swap = op.swap
    return (swap.signature, uuid.UUID(op.order_id), op.attempt, swap.venue, swap.tx_bytes,
            swap.last_valid_block_height, swap.min_amount_out)


def _quote_params(op: ApplyChange, event: OrderEvent) -> list[tuple[Any, ...]]:
    change = op.change
    return [
        (uuid.UUID(op.order_id), change.attempt, q.venue, q.pool, q.amount_in, q.amount_out,
         q.fee, q.fee_bps, q.price_impact_bps, q.venue == change.venue, event.at,
         q.latency_ms)
        for q in change.quotes or ()
    ]


def _check_epoch(order_id: str, stored: int | None, held: int | None) -> None:
    if held is not None and stored != held:
        raise LeaseLost(f"order {order_id} is leased to a newer executor (epoch {stored})")


def _with_events(order: Order, events: list[OrderEvent]) -> Order:
    return replace(order, events=tuple(events))
