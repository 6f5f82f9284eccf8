"""Read-only reports over the order tables (and the simulated chain's) for `dexec bench`."""

from __future__ import annotations

from typing import Any

import psycopg

from core.orders import TERMINAL


async def outcomes(database_url: str, client_id_prefix: str) -> dict[str, dict[str, Any]]:
    """Return per order whose client_order_id starts with the prefix: its status, event
    times, executed swaps on the simulated chain and the venues' own time."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        # Joins and groups, not per-row subqueries: the planner ran those as a nested loop
        # over all of simchain.transactions (minutes for 8,000 orders).
        cur = await conn.execute(
            "WITH o AS (SELECT order_id, status, created_at FROM orders"
            "   WHERE client_order_id LIKE %s),"
            " ev AS (SELECT e.order_id, json_agg(json_build_object('s', e.status,"
            "   'at', extract(epoch from e.at)) ORDER BY e.seq) AS events"
            "   FROM order_events e JOIN o USING (order_id) GROUP BY e.order_id),"
            " ex AS (SELECT s.order_id, count(*) AS executed,"
            "   max(t.land_at - t.sent_at) FILTER (WHERE t.sent_at > 0) AS swap_s"
            "   FROM swap_transactions s"
            "   JOIN o USING (order_id) JOIN simchain.transactions t"
            "   ON t.signature = s.signature AND t.state = 'confirmed' GROUP BY s.order_id),"
            # The venues' quote time: the slower venue of each attempt (they run in parallel).
            " qa AS (SELECT q.order_id, q.attempt, max(q.latency_ms) AS ms FROM order_quotes q"
            "   JOIN o USING (order_id) GROUP BY q.order_id, q.attempt),"
            " qt AS (SELECT order_id, sum(ms) / 1000 AS quote_s FROM qa GROUP BY order_id)"
            " SELECT o.order_id::text, o.status, o.created_at, ev.events,"
            " coalesce(ex.executed, 0), ex.swap_s, qt.quote_s FROM o"
            " LEFT JOIN ev USING (order_id) LEFT JOIN ex USING (order_id)"
            " LEFT JOIN qt USING (order_id)",
            (f"{client_id_prefix}%",),
        )
        rows = await cur.fetchall()
    return {r[0]: {"status": r[1], "events": r[3] or [], "executed": int(r[4]),
                   "venue_s": (float(r[5]) + float(r[6])) if r[5] is not None
                   and r[6] is not None else None}
            for r in rows}


async def count_terminal(database_url: str, client_id_prefix: str) -> int:
    """Return how many orders whose client_order_id starts with the prefix are terminal."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM orders WHERE client_order_id LIKE %s AND status = ANY(%s)",
            (f"{client_id_prefix}%", sorted(str(s) for s in TERMINAL)))
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def swap_signatures(database_url: str, client_id_prefix: str) -> dict[str, list[str]]:
    """Every signature recorded for each order whose client_order_id starts with the prefix
    (to count on a Solana cluster which of them executed)."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT s.order_id::text, s.signature FROM swap_transactions s"
            " JOIN orders o USING (order_id) WHERE o.client_order_id LIKE %s",
            (f"{client_id_prefix}%",))
        found: dict[str, list[str]] = {}
        for order_id, signature in await cur.fetchall():
            found.setdefault(order_id, []).append(signature)
    return found


async def resting_report(database_url: str, client_id_prefix: str) -> dict[str, Any]:
    """For the orders whose client_order_id starts with the prefix: how many are open, how
    many were set off by a price (a `routing` event after their `open` one), and the first
    and last such event's time (unix seconds)."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "WITH o AS (SELECT order_id, status FROM orders WHERE client_order_id LIKE %s),"
            " t AS (SELECT e.order_id, min(e.at) AS at FROM order_events e JOIN o"
            "   USING (order_id) WHERE e.status = 'routing' AND e.seq > 2 GROUP BY e.order_id)"
            " SELECT (SELECT count(*) FROM o WHERE status = 'open'), count(t.at),"
            " extract(epoch from min(t.at)), extract(epoch from max(t.at)) FROM t",
            (f"{client_id_prefix}%",))
        row = await cur.fetchone()
    assert row is not None  # noqa: S101 - an aggregate answers one row
    return {"open": int(row[0]), "triggered": int(row[1]),
            "first_routing_at": float(row[2]) if row[2] is not None else None,
            "last_routing_at": float(row[3]) if row[3] is not None else None}
