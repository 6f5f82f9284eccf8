"""The repository against the real database: what one read returns is one moment's order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from core.errors import DexecError, LeaseLost
from core.orders import Change, NewOrder, Order, OrderType, Trigger
from core.quotes import SwapStatus
from core.tokens import TokenRegistry
from dexec.launch import Engine
from storage.database import keyed, rows_from, rows_param
from storage.migrate import apply_migrations
from storage.repository import OrderRepository
from storage.writes import ApplyChange, SetSwapStatus


async def test_an_order_read_while_it_changes_matches_its_own_history(engine: Engine) -> None:
    """The order row, its events and its quotes are read in one snapshot: an event that
    commits between the reads must not come back newer than the order's seq (a WebSocket
    subscriber was sent that event twice: once in the state, once live)."""
    assert engine.settings.database_url is not None
    repo = OrderRepository(engine.settings.database_url.get_secret_value())
    await repo.open()
    tokens = TokenRegistry()
    [created] = await repo.create_orders([NewOrder(
        "default", None, OrderType.MARKET, tokens.resolve("SOL").mint,
        tokens.resolve("USDC").mint, 1_000_000, 50)])
    assert not isinstance(created, DexecError)
    order: Order = created[0]
    done = asyncio.Event()

    async def writer() -> None:
        nonlocal order
        try:
            changes = [Change(Trigger.START_ROUTING, attempt=1)] + [
                Change(Trigger.RETRY, attempt=n) for n in range(2, 150)]
            for change in changes:
                [answer] = await repo.write_batch([ApplyChange(order.order_id, change, None,
                                                               order)])
                assert not isinstance(answer, DexecError) and answer is not None
                order = answer[0]
        finally:
            done.set()

    reads = 0
    try:
        task = asyncio.get_running_loop().create_task(writer())
        while not done.is_set():
            read = await repo.get_order(order.order_id)
            assert read is not None
            assert [e.seq for e in read.events] == list(range(1, read.seq + 1))
            assert read.events[-1].status == read.status
            reads += 1
        await task
    finally:
        await repo.close()
    assert reads > 10 and order.seq == 150


async def test_a_batched_write_looks_its_rows_up_by_key_however_large_the_table(
        engine: Engine, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A write batch joins its rows (one JSON parameter) to `orders` and `swap_transactions`.
    The planner guesses 100 rows for such a parameter, and used to scan the whole table on
    every write once it held a few thousand rows: each write then cost time in proportion to
    every order ever stored. Planned here against 3,000 extra finished orders and swaps."""
    assert engine.settings.database_url is not None
    account = f"filler-{uuid.uuid4().hex[:8]}"
    db.execute("INSERT INTO accounts (account_id) VALUES (%s)", (account,))
    db.execute(
        "INSERT INTO orders (order_id, account_id, order_type, input_mint, output_mint,"
        " amount_in, slippage_bps, status, seq, created_at, updated_at)"
        " SELECT gen_random_uuid(), %s, 'market', 'in', 'out', 1, 50, 'failed', 1, now(), now()"
        " FROM generate_series(1, 3000)", (account,))
    db.execute(
        "INSERT INTO swap_transactions (signature, order_id, attempt, venue, tx_bytes,"
        " last_valid_block_height, min_amount_out, status)"
        " SELECT order_id::text, order_id, 1, 'raydium', '\\x00', 1, 1, 'expired'"
        " FROM orders WHERE account_id = %s", (account,))
    db.execute("ANALYZE orders")
    db.execute("ANALYZE swap_transactions")
    statements: list[tuple[str, Any]] = []
    execute = psycopg.AsyncConnection.execute

    async def recorded(self: psycopg.AsyncConnection[Any], query: Any, params: Any = None,
                       **kwargs: Any) -> Any:
        statements.append((query, params))
        return await execute(self, query, params, **kwargs)

    repo = OrderRepository(engine.settings.database_url.get_secret_value())
    await repo.open()
    try:
        tokens = TokenRegistry()
        [created] = await repo.create_orders([NewOrder(
            account, None, OrderType.MARKET, tokens.resolve("SOL").mint,
            tokens.resolve("USDC").mint, 1_000_000, 50, dry_run=True)])
        assert not isinstance(created, DexecError)
        order = created[0]
        monkeypatch.setattr(psycopg.AsyncConnection, "execute", recorded)
        answers = await repo.write_batch([
            ApplyChange(order.order_id, Change(Trigger.START_ROUTING, attempt=1), None, order),
            SetSwapStatus("no-such-signature", SwapStatus.CONFIRMED),
        ])
        monkeypatch.undo()
        assert not any(isinstance(a, DexecError) for a in answers)
        [(query, params)] = statements
        plan = "\n".join(r[0] for r in db.execute(f"EXPLAIN {query}", params))
        assert "Seq Scan on orders" not in plan and "Seq Scan on swap_transactions" not in plan, \
            plan
        assert "orders_pkey" in plan and "swap_transactions_pkey" in plan, plan
    finally:
        await repo.close()
        db.execute("DELETE FROM swap_transactions WHERE order_id IN"
                    " (SELECT order_id FROM orders WHERE account_id = %s)", (account,))
        db.execute("DELETE FROM order_events WHERE order_id IN"
                    " (SELECT order_id FROM orders WHERE account_id = %s)", (account,))
        db.execute("DELETE FROM orders WHERE account_id = %s", (account,))


async def _statements_of(monkeypatch: pytest.MonkeyPatch, repo: OrderRepository,
                         ops: list[ApplyChange]) -> tuple[list[Any], int]:
    """Write `ops` as one batch; return the answers and how many statements it took."""
    count = 0
    execute = psycopg.AsyncConnection.execute

    async def counted(self: psycopg.AsyncConnection[Any], query: Any, params: Any = None,
                      **kwargs: Any) -> Any:
        nonlocal count
        count += 1
        return await execute(self, query, params, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(psycopg.AsyncConnection, "execute", counted)
        answers = await repo.write_batch(ops)
    return answers, count


@pytest.fixture
async def repo(engine: Engine) -> AsyncIterator[OrderRepository]:
    assert engine.settings.database_url is not None
    opened = OrderRepository(engine.settings.database_url.get_secret_value())
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def _fresh_order(repo: OrderRepository) -> Order:
    tokens = TokenRegistry()
    [created] = await repo.create_orders([NewOrder(
        "default", None, OrderType.MARKET, tokens.resolve("SOL").mint,
        tokens.resolve("USDC").mint, 1_000_000, 50)])
    assert not isinstance(created, DexecError)
    return created[0]


def _then(order: Order, change: Change) -> Order:
    """The order as `change` leaves it, worked out by its executor before it is written."""
    result = order.apply(change, order.updated_at)
    assert result is not None
    return result[0]


async def test_changes_made_one_from_the_other_in_a_batch_are_one_statement(
        repo: OrderRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    """An executor that already knows its next change (a swap that landed on arrival)
    sends it made from the order as the change before leaves it: the batch writes both as
    one row update with both events, in one statement, and answers each with its own
    order."""
    order = await _fresh_order(repo)
    changes = [Change(Trigger.START_ROUTING, attempt=1), Change(Trigger.RETRY, attempt=2),
               Change(Trigger.RETRY, attempt=3)]
    expected = [order, _then(order, changes[0])]
    expected.append(_then(expected[1], changes[1]))
    answers, statements = await _statements_of(monkeypatch, repo, [
        ApplyChange(order.order_id, c, None, e, chained=k > 0)
        for k, (c, e) in enumerate(zip(changes, expected, strict=True))])
    assert statements == 1
    assert [a[0].seq for a in answers if a is not None and not isinstance(a, DexecError)
            ] == [2, 3, 4]
    stored = await repo.get_order(order.order_id)
    assert stored is not None and stored.seq == 4 and stored.attempt == 3
    assert [(e.seq, e.attempt) for e in stored.events] == [(1, 0), (2, 1), (3, 2), (4, 3)]


async def test_a_chain_of_changes_under_a_lost_lease_writes_none_of_them(
        repo: OrderRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    order = await _fresh_order(repo)
    first = Change(Trigger.START_ROUTING, attempt=1)
    answers, _ = await _statements_of(monkeypatch, repo, [
        ApplyChange(order.order_id, first, 999, order),
        ApplyChange(order.order_id, Change(Trigger.RETRY, attempt=2), 999,
                    _then(order, first), chained=True)])
    assert all(isinstance(a, LeaseLost) for a in answers), answers
    stored = await repo.get_order(order.order_id)
    assert stored is not None and stored.seq == 1 and len(stored.events) == 1


async def test_a_change_made_from_one_that_was_refused_is_refused_alone(
        repo: OrderRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    """The middle change is illegal, so the last (made from the state it would have left)
    can never apply; the first is written, and the order gets only its event."""
    order = await _fresh_order(repo)
    first = Change(Trigger.START_ROUTING, attempt=1)
    routing = _then(order, first)
    answers, _ = await _statements_of(monkeypatch, repo, [
        ApplyChange(order.order_id, first, None, order),
        ApplyChange(order.order_id, Change(Trigger.TX_CONFIRMED, attempt=1), None, routing,
                    chained=True),
        ApplyChange(order.order_id, Change(Trigger.RETRY, attempt=2), None,
                    replace(routing, seq=routing.seq + 1), chained=True)])
    assert not isinstance(answers[0], DexecError) and answers[0] is not None
    assert isinstance(answers[1], DexecError) and not isinstance(answers[1], LeaseLost)
    assert isinstance(answers[2], LeaseLost)
    stored = await repo.get_order(order.order_id)
    assert stored is not None and stored.seq == 2
    assert [e.seq for e in stored.events] == [1, 2]


async def test_a_chained_change_is_never_written_without_the_change_it_follows(
        repo: OrderRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel writes seq 2 first; the executor's start (expecting seq 1) is refused, and
    its next change, made from the seq 2 that start would have left, comes in another
    batch (a split batch, or each item retried alone). Its seq matches the cancelled order's,
    yet it must be refused: written, it would turn a cancelled order into a routed one."""
    order = await _fresh_order(repo)
    [cancelled] = await repo.write_batch([
        ApplyChange(order.order_id, Change(Trigger.CANCEL, attempt=0), None, order)])
    assert cancelled is not None and not isinstance(cancelled, DexecError)
    first = Change(Trigger.START_ROUTING, attempt=1)
    [refused] = await repo.write_batch([ApplyChange(order.order_id, first, 7, order)])
    assert isinstance(refused, LeaseLost)
    [after], statements = await _statements_of(monkeypatch, repo, [ApplyChange(
        order.order_id, Change(Trigger.RETRY, attempt=2), None, _then(order, first),
        chained=True)])
    assert isinstance(after, LeaseLost) and statements == 0
    stored = await repo.get_order(order.order_id)
    assert stored is not None and str(stored.status) == "cancelled" and stored.seq == 2


async def test_the_engines_sessions_read_a_small_or_unanalyzed_table_by_key(
        engine: Engine) -> None:
    """While a table is young its statistics say it is small (autovacuum analyzes at most once
    a minute, and a prepared statement keeps the plan made then), and the planner scans a
    small table whole. A fresh database grew to thousands of orders that way, every batched
    write and lease reading all of them. The engine's sessions (storage.database.keyed) look
    rows up by key whatever the statistics say. Planned here in a fresh database holding 50
    analyzed orders, on a plain session (a sequential scan: the case) and on a keyed one."""
    assert engine.settings.database_url is not None
    url = engine.settings.database_url.get_secret_value()
    name = f"young_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    young = make_conninfo(url, dbname=name)
    try:
        await apply_migrations(young)
        with psycopg.connect(young, autocommit=True) as db:
            db.execute("INSERT INTO accounts (account_id) VALUES ('a')")
            db.execute(
                "INSERT INTO orders (order_id, account_id, order_type, input_mint, output_mint,"
                " amount_in, slippage_bps, status, seq, created_at, updated_at)"
                " SELECT gen_random_uuid(), 'a', 'market', 'in', 'out', 1, 50, 'pending', 1,"
                " now(), now() FROM generate_series(1, 50)")
            db.execute("ANALYZE orders")
            [(order_id,)] = db.execute("SELECT order_id::text FROM orders LIMIT 1").fetchall()
        # A batched write's shape: its rows as one JSON parameter, looked up by key.
        query = (f"EXPLAIN UPDATE orders o SET seq = v.seq FROM {rows_from(_ROWS, 'v')}"  # noqa: S608 - constant names
                 " WHERE o.order_id = v.order_id"
                 " AND o.order_id = ANY(%s::uuid[])")
        rows = rows_param([[order_id, 2]])

        def plan(conninfo: str) -> str:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                return "\n".join(r[0] for r in conn.execute(query, [rows, [order_id]]))

        assert "Seq Scan on orders" in plan(young)
        keyed_plan = plan(keyed(young))
        assert "Seq Scan on orders" not in keyed_plan and "orders_pkey" in keyed_plan, keyed_plan

        # A prepared statement runs on one generic plan (its parameter stays $1), not on a
        # plan made afresh for each execution's values.
        def prepared_plan(conninfo: str) -> str:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute("PREPARE one(uuid) AS SELECT seq FROM orders WHERE order_id = $1")
                return "\n".join(r[0] for r in conn.execute(
                    f"EXPLAIN EXECUTE one('{order_id}')"))

        assert "$1" not in prepared_plan(young)
        assert "$1" in prepared_plan(keyed(young)), prepared_plan(keyed(young))
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_ROWS = (("order_id", "uuid"), ("seq", "int"))
