"""One pooled PostgreSQL connection source, shared by every store in this package."""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from core.errors import DexecError, InvalidInput, TransientDatabaseError

log = logging.getLogger(__name__)

UNAVAILABLE = "database unavailable; retry shortly"


# The engine's sessions: key lookups only, and one generic plan per prepared statement.
KEYED_OPTIONS = "-c enable_seqscan=off -c plan_cache_mode=force_generic_plan"


def keyed(conninfo: str) -> str:
    """Return `conninfo` for sessions whose statements find rows by key: with sequential
    scans disabled (the planner takes one only where no index can serve), and with one
    generic plan for each prepared statement instead of a plan per execution.

    A young table's statistics lag behind it: autovacuum analyzes it at most once a minute,
    and until then the planner believes a table of thousands of rows holds a hundred or so.
    So it planned every batched write and every lease with a sequential scan of `orders`
    (and `swap_transactions`), whose cost grew with each order stored. Measured 2026-11-30
    with auto_explain on a fresh database at 50/s: 7,205 scans of `orders` for 1,214 orders,
    4.4 million rows read. Every benchmark and every new deployment starts there.

    Generic plans: psycopg prepares a statement once a session has run it five times, and
    PostgreSQL then still plans it afresh on each of its next executions, and keeps doing so
    while a plan for the given values looks cheaper. The hot statements (a batch of order
    writes, a lease, a batch of new orders) have a few fixed shapes whose rows arrive as one
    array or JSON parameter, so a plan per execution buys nothing, and its cost grows with
    the tables. Measured 2026-12-01 at 200/s on a stack holding 33,000 orders (BAAB):
    PostgreSQL's CPU per order 2.35 and 2.37 ms with plans per execution, 1.74 and 1.79 ms
    with generic ones (p50 17.5-17.8 against 12.1-13.7 ms); on fresh stacks 1.77-1.90
    against 1.76-1.78 ms, and no change at capacity. The partial indexes (`orders_open`)
    serve only start-up queries, which run once per session and are never prepared. An
    operator's own `options` in the URL are kept.
    """
    own = conninfo_to_dict(conninfo).get("options")
    options = " ".join(str(o) for o in (own, KEYED_OPTIONS) if o)
    return make_conninfo(conninfo, options=options)


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
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            # A value the database refuses (out of range, a failed check). The client learns
            # that much, never the server's text; the log has it.
            log.info("database refused a value: %s", exc.diag.message_primary)
            raise InvalidInput("a value is out of range") from None


T = TypeVar("T")
R = TypeVar("R")


async def each_on_its_own(call: Callable[[Sequence[T]], Awaitable[list[R | DexecError]]],
                          items: Sequence[T]) -> list[R | DexecError]:
    """Run one batched statement over `items`, answering each item on its own.

    When one item's value makes the whole statement fail (InvalidInput: a value the database
    refuses), every item is tried by itself, so a bad item is its own answer and never fails
    the others that travelled with it.
    """
    try:
        return await call(items)
    except InvalidInput:
        if len(items) == 1:
            raise
    answers: list[R | DexecError] = []
    for item in items:
        try:
            answers.extend(await call([item]))
        except InvalidInput as exc:
            answers.append(exc)
    return answers


# Batched statements send their rows as one JSON parameter and unpack it on the server: one
# statement for any number of rows (executemany costs a statement, and Python work, per row).


def rows_from(columns: Sequence[tuple[str, str]], alias: str) -> str:
    """Return a FROM item `(SELECT (r->>0)::t1 AS c1, ... ) AS alias` over one JSON parameter.

    The rows travel as one JSON array of arrays (see rows_param): json.dumps runs in C, where
    psycopg would dump a parameter per column in Python; the server parses it in C as well.
    """
    fields = ", ".join(f"(r->>{k})::{t} AS {c}" for k, (c, t) in enumerate(columns))
    return f"(SELECT {fields} FROM jsonb_array_elements(%s::jsonb) AS j(r)) AS {alias}"  # noqa: S608 - constant names


def _json_value(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return "\\x" + value.hex()  # bytea's hex input format
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    raise TypeError(f"cannot send {type(value).__name__} as a JSON row value")


def rows_param(rows: Sequence[Sequence[Any]]) -> str:
    """Return the rows as the JSON parameter of a rows_from FROM item."""
    return json.dumps(rows, default=_json_value, separators=(",", ":"))
