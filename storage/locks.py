"""Execution leases: one PostgreSQL advisory lock per executing order.

A worker holds the locks of the orders it executes on one dedicated connection. If the
worker dies, PostgreSQL sees the connection close and releases every lock at once, so
another worker may take the order over; while the worker lives, nobody else can.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import psycopg

from core.errors import TransientDatabaseError
from storage.database import UNAVAILABLE

log = logging.getLogger(__name__)


def lock_key(order_id: str) -> int:
    """Map an order id to a signed 64-bit advisory lock key."""
    return int.from_bytes(uuid.UUID(order_id).bytes[:8], "big", signed=True)


class Lease:
    """A held lock; `valid` turns False once the connection holding it was lost."""

    def __init__(self, owner: ExecutionLocks, order_id: str, generation: int,
                 epoch: int | None) -> None:
        self._owner = owner
        self.order_id = order_id
        self._generation = generation
        self.epoch = epoch  # the order's lease epoch: writes under an older one are refused

    @property
    def valid(self) -> bool:
        return self._owner.generation == self._generation and self._owner.connected

    async def release(self) -> None:
        if self.valid:
            await self._owner.unlock(self.order_id)
        else:
            self._owner.forget(self.order_id)


class ExecutionLocks:
    """Acquire and release per-order advisory locks on one dedicated connection."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._connect_lock = asyncio.Lock()
        self.generation = 0  # bumped on every reconnect: older leases are void
        # Advisory locks are re-entrant within one session, so a second execution of the same
        # order in this process would be granted the lock again: refuse it here.
        self._held: set[str] = set()

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
                        self._conninfo, autocommit=True, connect_timeout=5, keepalives=1,
                        keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
                    )
                except psycopg.OperationalError as exc:
                    self._conn = None
                    log.warning("lease connection: %s", exc)
                    raise TransientDatabaseError(UNAVAILABLE) from None
                self.generation += 1
            assert self._conn is not None  # noqa: S101 - set above
            return self._conn

    async def try_acquire(self, order_id: str) -> Lease | None:
        """Return a lease on the order, or None when anyone else, here or elsewhere, holds it."""
        if order_id in self._held:
            return None
        self._held.add(order_id)
        try:
            conn = await self._connection()
            generation = self.generation
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(order_id),))
            row = await cur.fetchone()
        except psycopg.OperationalError as exc:
            self._held.discard(order_id)
            log.warning("lease connection: %s", exc)
            raise TransientDatabaseError(UNAVAILABLE) from None
        except BaseException:
            self._held.discard(order_id)
            raise
        if not (row and row[0]):
            self._held.discard(order_id)
            return None
        try:
            cur = await conn.execute(
                "UPDATE orders SET lease_epoch = lease_epoch + 1 WHERE order_id = %s"
                " RETURNING lease_epoch", (uuid.UUID(order_id),))
            bumped = await cur.fetchone()
        except psycopg.OperationalError as exc:
            self._held.discard(order_id)
            log.warning("lease epoch not taken: %s", exc)
            raise TransientDatabaseError(UNAVAILABLE) from None
        return Lease(self, order_id, generation, bumped[0] if bumped else None)

    async def unlock(self, order_id: str) -> None:
        try:
            conn = await self._connection()
            await conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(order_id),))
        except (psycopg.OperationalError, TransientDatabaseError) as exc:
            log.info("unlock of %s skipped: %s", order_id, exc)
        finally:
            self._held.discard(order_id)

    def forget(self, order_id: str) -> None:
        """Drop a lease whose connection is gone (PostgreSQL already released the lock)."""
        self._held.discard(order_id)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
