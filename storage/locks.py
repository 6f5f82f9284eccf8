"""Execution leases: one PostgreSQL advisory lock per executing order.

A worker holds the locks of the orders it executes on one dedicated connection. If the
worker dies, PostgreSQL sees the connection close and releases every lock at once, so
another worker may take the order over; while the worker lives, nobody else can.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from core.errors import TransientDatabaseError
from core.orders import Order
from storage.database import UNAVAILABLE, keyed
from storage.rows import ORDER_COLUMNS, order_from_row

log = logging.getLogger(__name__)


def lock_key(order_id: str) -> int:
    """Map an order id to a signed 64-bit advisory lock key."""
    return int.from_bytes(uuid.UUID(order_id).bytes[:8], "big", signed=True)


class Lease:
    """A held lock; `valid` turns False once the connection holding it was lost.

    `order` is the order as it stood when the lease was taken (read in the same statement
    that took the lease epoch), so the executor starts without another query.
    """

    def __init__(self, owner: ExecutionLocks, order_id: str, generation: int,
                 epoch: int | None, order: Order | None = None) -> None:
        self._owner = owner
        self.order_id = order_id
        self._generation = generation
        self.epoch = epoch  # the order's lease epoch: writes under an older one are refused
        self.order = order

    @property
    def valid(self) -> bool:
        return self._owner.generation == self._generation and self._owner.connected

    async def release(self) -> None:
        if self.valid:
            self._owner.unlock(self.order_id)
            await self._owner.drain()  # with every release queued meanwhile: one statement
        else:
            self._owner.forget(self.order_id)


class ExecutionLocks:
    """Acquire and release per-order advisory locks on one dedicated connection.

    Both directions are batched: many orders are leased with one statement, and releases
    queue up and go out together.
    """

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._connect_lock = asyncio.Lock()
        self.generation = 0  # bumped on every reconnect: older leases are void
        # Advisory locks are re-entrant within one session, so a second execution of the same
        # order in this process would be granted the lock again: refuse it here. An order
        # stays here until its lock is really released.
        self._held: set[str] = set()
        self._to_unlock: list[str] = []
        self._unlocking: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed and not self._conn.broken

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        async with self._connect_lock:
            if not self.connected:
                if self._conn is not None:
                    log.warning("execution lock connection lost; every lease it held is void")
                    await self._conn.close()
                try:
                    # Keepalives: if this worker's machine vanishes, PostgreSQL drops the
                    # session (and the leases) within seconds rather than hours.
                    self._conn = await psycopg.AsyncConnection.connect(
                        keyed(self._conninfo), autocommit=True, connect_timeout=5, keepalives=1,
                        keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
                    )
                except psycopg.OperationalError as exc:
                    self._conn = None
                    log.warning("lease connection: %s", exc)
                    raise TransientDatabaseError(UNAVAILABLE) from None
                self.generation += 1
            assert self._conn is not None  # noqa: S101 - set above
            return self._conn

    async def try_acquire_many(self, order_ids: Sequence[str]) -> list[Lease | None]:
        """Lease each order that nobody else holds; None for the others. One statement."""
        answers: list[Lease | None] = [None] * len(order_ids)
        fresh: list[int] = []
        for k, order_id in enumerate(order_ids):
            if order_id not in self._held:  # also refuses a second copy in this batch
                self._held.add(order_id)
                fresh.append(k)
        if not fresh:
            return answers
        ids = [order_ids[k] for k in fresh]
        try:
            uuids, keys = [uuid.UUID(i) for i in ids], [lock_key(i) for i in ids]
        except ValueError:  # not an order id: nothing was locked
            self._held.difference_update(ids)
            raise
        try:
            conn = await self._connection()
            generation = self.generation
            cur = conn.cursor(row_factory=dict_row)
            # The locks are tried once per order (a materialized CTE), then the orders won
            # get a new lease epoch; rows are locked in id order, like every batched write,
            # so no deadlock. One round trip for the whole batch.
            await cur.execute(
                "WITH l AS MATERIALIZED (SELECT t.id, t.n, pg_try_advisory_lock(t.k) AS got"  # noqa: S608
                " FROM unnest(%s::uuid[], %s::bigint[]) WITH ORDINALITY AS t(id, k, n)),"
                " u AS (UPDATE orders SET lease_epoch = lease_epoch + 1 WHERE order_id IN"
                " (SELECT order_id FROM orders WHERE order_id IN (SELECT id FROM l WHERE got)"
                f" ORDER BY order_id FOR UPDATE) RETURNING {ORDER_COLUMNS}, lease_epoch)"
                " SELECT l.got, u.* FROM l LEFT JOIN u ON u.order_id = l.id ORDER BY l.n",
                (uuids, keys))
            rows = await cur.fetchall()
        except BaseException as exc:
            # Session locks outlive a failed statement, and which were taken is unknown:
            # release them all (unlocking a lock not held is a harmless no-op); they stay
            # held here until that is done.
            self.unlock_soon(ids)
            if isinstance(exc, psycopg.OperationalError):
                log.warning("lease connection: %s", exc)
                raise TransientDatabaseError(UNAVAILABLE) from None
            raise
        for k, order_id, row in zip(fresh, ids, rows, strict=True):
            if not row["got"]:
                self._held.discard(order_id)
                continue
            known = row["order_id"] is not None
            answers[k] = Lease(self, order_id, generation,
                               row["lease_epoch"] if known else None,
                               order_from_row(row) if known else None)
        return answers

    def unlock(self, order_id: str) -> None:
        """Release the order's lock soon; it stays held here until PostgreSQL has it back."""
        self._to_unlock.append(order_id)
        if self._unlocking is None or self._unlocking.done():
            self._unlocking = asyncio.get_running_loop().create_task(self._drain_unlocks())

    def unlock_soon(self, order_ids: list[str]) -> None:
        self._held.update(order_ids)
        for order_id in order_ids:
            self.unlock(order_id)

    async def _drain_unlocks(self) -> None:
        while self._to_unlock:
            ids, self._to_unlock = self._to_unlock, []
            try:
                conn = await self._connection()
                await conn.execute(
                    "SELECT pg_advisory_unlock(t.k) FROM unnest(%s::bigint[]) AS t(k)",
                    ([lock_key(i) for i in ids],))
            except (psycopg.OperationalError, TransientDatabaseError) as exc:
                # The session is gone, and with it every lock it held.
                log.info("unlock of %d orders skipped: %s", len(ids), exc)
            finally:
                self._held.difference_update(ids)

    async def drain(self) -> None:
        """Wait until every queued release has reached PostgreSQL (tests, shutdown)."""
        while self._unlocking is not None and not self._unlocking.done():
            await asyncio.shield(self._unlocking)

    def forget(self, order_id: str) -> None:
        """Drop a lease whose connection is gone (PostgreSQL already released the lock)."""
        self._held.discard(order_id)

    async def close(self) -> None:
        await self.drain()
        if self._conn is not None:
            await self._conn.close()
