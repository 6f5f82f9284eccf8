"""Conditional writes of order state: status changes, swap records and swap statuses.

Many writes of many orders go out as one SQL statement. A status change is written only if
the stored order is still the one its executor last saw (same seq) and the executor still
holds the order's newest lease (same epoch): that is what keeps two executors from ever
both changing an order. Whatever a batch could not write is looked up afterwards, to tell
an unknown order, a lost lease and a concurrent change apart.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.errors import DexecError, LeaseLost, OrderNotFound
from core.orders import Change, Order, OrderEvent
from core.quotes import SignedSwap, SwapStatus
from storage.database import Database, each_on_its_own, rows_from, rows_param
from storage.rows import (
    EVENT_INSERT,
    EXPECTED_UPDATE,
    QUOTE_INSERT,
    SWAP_INSERT,
    SWAP_STATUS_UPDATE,
    event_values,
    swap_values,
)


@dataclass(frozen=True)
class ApplyChange:
    """A status change of one order, and the event it adds.

    `expected` is the order as its executor knows it: the change is computed from it and
    written only if the stored order is still that one. `epoch` is the executor's lease
    epoch (None: no fencing). `swap` is a transaction signed for this change (the route
    chosen): it is recorded in the same statement, only if the change is written, and
    before it can be sent (the exactly-once rule). Recording a signature again is a
    harmless repeat. `at` is when the change happened, where its executor knew it before
    the write (None: the time of the write). `chained`: `expected` is not the order as
    stored but as the change before it in the same batch leaves it; it is written only
    together with that change, in its statement, and refused otherwise (a seq alone cannot
    tell: another writer's change, refused to this executor's first one, makes the same seq).
    """

    order_id: str
    change: Change
    epoch: int | None
    expected: Order
    swap: SignedSwap | None = None
    at: datetime | None = None
    chained: bool = False


@dataclass(frozen=True)
class SetSwapStatus:
    """What became of a recorded transaction (confirmed, failed, expired, rejected)."""

    signature: str
    status: SwapStatus


Write = ApplyChange | SetSwapStatus
# What a write answers: for an ApplyChange the new order and its event (None: the change
# was a repeat, nothing written); for a SetSwapStatus None.
Written = tuple[Order, OrderEvent] | None


def _now() -> datetime:
    return datetime.now(UTC)


class OrderWriter:
    """Apply batches of writes, each batch atomically, each item answered on its own."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def write_batch(self, ops: Sequence[Write]) -> list[Written | DexecError]:
        """Apply many writes of many orders; answer each in order.

        An item that fails (an illegal transition, a lost lease, an unknown order) is
        answered with its DexecError and writes nothing; the others go on. A `chained`
        change (made from the order as the one before it in the batch leaves it: its
        expected seq is that one's next, under the same epoch) is written in the same
        statement, as one row update with both events, all or nothing; other changes to
        one order go out in successive statements, each seeing the one before.
        """
        return await each_on_its_own(self._write_rounds, ops)

    async def _write_rounds(self, ops: Sequence[Write]) -> list[Written | DexecError]:
        answers: list[Written | DexecError] = [None] * len(ops)
        waiting = list(enumerate(ops))
        while waiting:
            this_round: list[tuple[int, Write]] = []
            later: list[tuple[int, Write]] = []
            changing: dict[str, ApplyChange] = {}  # each order's last change this round
            for k, op in waiting:
                if isinstance(op, ApplyChange):
                    before = changing.get(op.order_id)
                    if before is not None and not _follows(op, before):
                        later.append((k, op))
                        continue
                    changing[op.order_id] = op
                this_round.append((k, op))
            written = await self._write_expected([op for _, op in this_round])
            for (k, _), answer in zip(this_round, written, strict=True):
                answers[k] = answer
            waiting = later
        return answers

    async def _write_expected(self, ops: Sequence[Write]) -> list[Written | DexecError]:
        """Write a batch in one statement, each change conditional on what its writer expects.

        An order is updated only if its stored seq is the one its executor last saw and its
        lease epoch is the executor's (fencing); its event, quotes and signed swap are
        inserted only for orders so updated, so a swap is never recorded under a lease that
        was lost: a lease taken meanwhile waits for the row (and sees the swap) or the
        whole change is refused.
        """
        now = _now()
        answers: list[Written | DexecError] = [None] * len(ops)
        updates: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        quotes: list[tuple[Any, ...]] = []
        swaps: list[tuple[Any, ...]] = []
        statuses: list[tuple[str, str]] = []
        changed: dict[int, ApplyChange] = {}
        row_of: dict[str, int] = {}  # an order's row in `updates`, to chain a change onto
        for k, op in enumerate(ops):
            if k and not k % 500:
                await asyncio.sleep(0)  # a batch of thousands: other callers go on meanwhile
            if isinstance(op, SetSwapStatus):
                statuses.append((op.status, op.signature))
            else:
                try:
                    result = op.expected.apply(op.change, op.at or now)
                except DexecError as exc:
                    answers[k] = exc
                    continue
                if result is None:
                    continue  # a repeat: nothing to write
                order, event = result
                row = (
                    op.order_id, op.expected.seq, op.epoch, str(order.status), order.attempt,
                    order.seq, order.venue, order.signature, order.amount_out, order.price,
                    order.failure_reason, order.updated_at, order.triggered_at,
                )
                chained = row_of.get(op.order_id)
                if chained is None and not op.chained:
                    row_of[op.order_id] = len(updates)
                    updates.append(row)
                elif op.chained and chained is not None and updates[chained][5] == op.expected.seq:
                    # Made from the state the change before it leaves: one row update,
                    # conditional on what the first of them expected (see _write_rounds).
                    updates[chained] = (op.order_id, updates[chained][1], *row[2:])
                else:
                    # Made from a state no change before it in this statement leaves (that
                    # one was refused here, or travels in another batch): the stored order
                    # must not be taken for what it expects. An order has one row in the
                    # statement, or its events would follow the other row's fate.
                    answers[k] = LeaseLost(f"order {op.order_id} changed concurrently"
                                           f" (expected seq {op.expected.seq})")
                    continue
                events.append(event_values(event))
                quotes.extend(_quote_values(op, event))
                if op.swap is not None:
                    swaps.append(swap_values(op.order_id, op.change.attempt, op.swap))
                answers[k] = result
                changed[k] = op
        parts: list[str] = []
        params: list[Any] = []
        if updates:
            # Why a batched UPDATE names its keys twice (here and for the swap statuses):
            # it joins its rows (a rows_from FROM item) to the table, and the planner, which
            # cannot see how many rows a JSON parameter holds, guesses 100; for a table of a
            # few thousand to some tens of thousands of rows, 100 index lookups cost more in
            # its model than one scan of the whole table, so it scanned `orders` on every
            # write (seen 2026-11-30: 1.2 ms for a one-row write with 3,000 orders, 0.06 ms
            # by the index; with 100,000 orders it chose the index by itself). `key =
            # ANY(keys)` beside the join, the keys sent again as an array (the rows
            # themselves travel once), lets it look each row up by the key's index at any size.
            parts.append(
                "upd AS (UPDATE orders o SET status = v.status, attempt = v.attempt,"
                " seq = v.seq, venue = v.venue, signature = v.signature,"
                " amount_out = v.amount_out, price = v.price,"
                " failure_reason = v.failure_reason, updated_at = v.updated_at,"
                " triggered_at = v.triggered_at"
                f" FROM {rows_from(EXPECTED_UPDATE, 'v')} WHERE o.order_id = v.order_id"
                " AND o.order_id = ANY(%s::uuid[])"
                " AND o.seq = v.expected_seq"
                " AND (v.epoch IS NULL OR o.lease_epoch = v.epoch) RETURNING o.order_id)"
            )
            params += [rows_param(updates), [row[0] for row in updates]]
            # An order's event, quotes and signed swap go in only if its change was written.
            parts.append(_for_updated("ev", "order_events", EVENT_INSERT))
            params.append(rows_param(events))
            if quotes:
                parts.append(_for_updated(
                    "qt", "order_quotes", QUOTE_INSERT,
                    # A resting order routed again in the same attempt keeps its newest quotes.
                    " ON CONFLICT (order_id, attempt, venue) DO UPDATE SET pool = EXCLUDED.pool,"
                    " amount_in = EXCLUDED.amount_in, amount_out = EXCLUDED.amount_out,"
                    " fee = EXCLUDED.fee, fee_bps = EXCLUDED.fee_bps,"
                    " price_impact_bps = EXCLUDED.price_impact_bps, chosen = EXCLUDED.chosen,"
                    " quoted_at = EXCLUDED.quoted_at, latency_ms = EXCLUDED.latency_ms"))
                params.append(rows_param(quotes))
            if swaps:  # recording a signature again is a harmless repeat
                parts.append(_for_updated("sw", "swap_transactions", SWAP_INSERT,
                                          " ON CONFLICT (signature) DO NOTHING"))
                params.append(rows_param(swaps))
        if statuses:
            parts.append(
                "st AS (UPDATE swap_transactions t SET status = x.status, updated_at = now()"
                f" FROM {rows_from(SWAP_STATUS_UPDATE, 'x')} WHERE t.signature = x.signature"
                " AND t.signature = ANY(%s::text[]))"
            )
            params += [rows_param(statuses), [signature for _, signature in statuses]]
        if not parts:
            return answers
        # The orders whose change was written; the others are explained below.
        final = "SELECT order_id::text FROM upd" if updates else "SELECT NULL WHERE false"
        async with self._db.connection() as conn:
            cur = await conn.execute(f"WITH {', '.join(parts)} {final}", params)
            written = {order_id for (order_id,) in await cur.fetchall()}
        unwritten = {k: op.order_id for k, op in changed.items() if op.order_id not in written}
        if unwritten:
            await self._explain_unwritten(ops, unwritten, answers)
        return answers

    async def _explain_unwritten(self, ops: Sequence[Write], unwritten: dict[int, str],
                                 answers: list[Written | DexecError]) -> None:
        """Answer each change that was not made with why."""
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT order_id::text, seq, lease_epoch FROM orders WHERE order_id = ANY(%s)",
                ([uuid.UUID(i) for i in set(unwritten.values())],))
            stored = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}
        for k, order_id in unwritten.items():
            op = ops[k]
            assert isinstance(op, ApplyChange)  # noqa: S101 - by construction
            if order_id not in stored:
                answers[k] = OrderNotFound(f"order {order_id} does not exist")
                continue
            seq, epoch = stored[order_id]
            if op.epoch is not None and epoch != op.epoch:
                answers[k] = LeaseLost(
                    f"order {order_id} is leased to a newer executor (epoch {epoch})")
            else:
                answers[k] = LeaseLost(
                    f"order {order_id} changed concurrently (stored seq {seq}, expected"
                    f" {op.expected.seq})")


def _follows(op: ApplyChange, before: ApplyChange) -> bool:
    """True when `op` is chained to `before`: made from the order as `before` leaves it,
    under the same lease."""
    return (op.chained and op.expected.seq == before.expected.seq + 1
            and op.epoch == before.epoch)


def _for_updated(name: str, table: str, columns: Sequence[tuple[str, str]],
                 conflict: str = "") -> str:
    """A CTE inserting rows (sent as one parameter) only for the orders `upd` updated."""
    names = ", ".join(c for c, _ in columns)
    return (f"{name} AS (INSERT INTO {table} ({names}) SELECT r.* FROM"
            f" {rows_from(columns, 'r')} WHERE r.order_id IN (SELECT order_id FROM upd)"
            f"{conflict})")


def _quote_values(op: ApplyChange, event: OrderEvent) -> list[tuple[Any, ...]]:
    change = op.change
    return [
        (uuid.UUID(op.order_id), change.attempt, q.venue, q.pool, q.amount_in, q.amount_out,
         q.fee, q.fee_bps, q.price_impact_bps, q.venue == change.venue, event.at,
         q.latency_ms)
        for q in change.quotes or ()
    ]
