"""One pooled PostgreSQL connection source, shared by every store in this package."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from core.errors import InvalidInput, TransientDatabaseError

log = logging.getLogger(__name__)

UNAVAILABLE = "database unavailable; retry shortly"


class Database:
    """An async pool that survives a failed start and turns outages into retryable errors.

    psycopg_pool closes a pool whose first `wait()` times out, and a closed pool cannot be
    opened again; so a failed open leaves the next one to build a fresh pool. Clients never
    see the driver's message (it can name hosts and users); the log has it.
    """

    def __init__(self, conninfo: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self._conninfo = conninfo
        self._min = min_size
        self._max = max_size
        self.pool = self._new_pool()
        self._used = False
        self._ready = False

    def _new_pool(self) -> AsyncConnectionPool:
        return AsyncConnectionPool(
            self._conninfo, min_size=self._min, max_size=self._max, open=False,
            # No check on checkout (it costs a round trip per query); a broken connection
            # fails its query, is discarded by the pool, and surfaces as a retryable error.
            kwargs={"autocommit": True},
        )

    async def open(self, wait_s: float = 30.0) -> None:
        """Open the pool and wait for its first connections; raise a retryable error if not."""
        if self._ready:
            return
        if self._used:
            self.pool = self._new_pool()
        self._used = True
        await self.pool.open()
        try:
            await self.pool.wait(timeout=wait_s)
        except PoolTimeout:
            log.warning("database not reachable within %.0fs", wait_s)
            raise TransientDatabaseError(UNAVAILABLE) from None
        self._ready = True

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self, *, transaction: bool = False, pipeline: bool = False
                         ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Borrow a connection (in a transaction if asked); translate the driver's errors.

        With `pipeline`, statements go out without waiting for each other's answers (one
        round trip until the next fetch), BEGIN and COMMIT included.
        """
        try:
            async with contextlib.AsyncExitStack() as stack:
                conn = await stack.enter_async_context(self.pool.connection(timeout=5.0))
                if pipeline:
                    await stack.enter_async_context(conn.pipeline())
                if transaction:
                    await stack.enter_async_context(conn.transaction())
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            log.warning("database unavailable: %s", exc)
            raise TransientDatabaseError(UNAVAILABLE) from None
        except psycopg.DataError as exc:
            raise InvalidInput(
                f"a value is out of range: {exc.diag.message_primary or 'invalid data'}"
            ) from None
