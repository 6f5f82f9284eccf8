"""SimChainStore against a real PostgreSQL: saved rounds of changes restore the same chain.

Uses the server on 127.0.0.1:5432 (or DEXEC_TEST_POSTGRES), in a fresh database dropped
afterwards; when none answers, an embedded pgserver in a temporary folder. No Ray.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from core.errors import InvalidInput, TransientDatabaseError
from gateways.simulated.chain import ChainSnapshot
from storage.database import Database
from storage.embedded import EmbeddedPostgres
from storage.migrate import apply_migrations
from storage.simchain import SimChainStore
from tests.kit.chain import (
    BLOCK_TIME_S,
    T0,
    VALID_BLOCKS,
    assert_same_chain,
    make_chain,
    restore,
    start_scenario,
    state_of,
)

SERVER = os.environ.get(
    "DEXEC_TEST_POSTGRES", "host=127.0.0.1 port=5432 user=postgres dbname=test"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Return the conninfo of a maintenance database on a running server."""
    try:
        with psycopg.connect(SERVER, connect_timeout=3):
            pass
    except psycopg.OperationalError:
        embedded = EmbeddedPostgres(Path(tmp_path_factory.mktemp("simchain")),
                                    delete_on_stop=True)
        yield embedded.start()
        embedded.stop()
        return
    yield SERVER


@pytest.fixture
async def conninfo(server: str) -> AsyncIterator[str]:
    """Create a fresh, uniquely named database with the migrations applied; drop it after."""
    name = f"dexec_simchain_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = make_conninfo(server, dbname=name)
            applied = await apply_migrations(url)
            assert "002_simchain.sql" in applied
            yield url
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def store(conninfo: str) -> AsyncIterator[SimChainStore]:
    store = SimChainStore(conninfo)
    await store.open()
    yield store
    await store.close()


async def test_nothing_stored_loads_as_none(store: SimChainStore) -> None:
    assert await store.load() is None


async def test_rounds_of_changes_load_back_into_the_same_chain(store: SimChainStore) -> None:
    original, scenario, steps = start_scenario()
    for _ in steps:
        await store.save(original.take_changes().as_rows())
    await store.save(original.take_changes().as_rows())  # nothing changed: a no-op

    rows = await store.load()

    assert rows is not None
    assert ChainSnapshot.from_rows(rows) == original.snapshot()
    restored = restore(ChainSnapshot.from_rows(rows))
    assert_same_chain(restored, original, scenario)


async def test_forgotten_blockhashes_are_deleted(store: SimChainStore) -> None:
    chain = make_chain()
    for k in range(6 * VALID_BLOCKS):  # a new block each time it is asked
        chain.latest_blockhash(T0 + k * BLOCK_TIME_S)
        if k % 50 == 0:
            await store.save(chain.take_changes().as_rows())
    await store.save(chain.take_changes().as_rows())

    rows = await store.load()

    assert rows is not None
    assert len(rows["blockhashes"]) <= 4 * VALID_BLOCKS
    assert ChainSnapshot.from_rows(rows) == chain.snapshot()


async def test_a_restored_chain_saves_on_and_restores_again(store: SimChainStore) -> None:
    first, _, steps = start_scenario()
    for step in steps:
        await store.save(first.take_changes().as_rows())
        if step == "failed":
            break
    rows = await store.load()
    assert rows is not None
    second = restore(ChainSnapshot.from_rows(rows))

    for _ in steps:  # the rest of the scenario runs on the restored chain
        await store.save(second.take_changes().as_rows())

    rows = await store.load()
    assert rows is not None
    assert state_of(restore(ChainSnapshot.from_rows(rows))) == state_of(second)


async def test_a_save_returns_only_after_every_earlier_save(store: SimChainStore) -> None:
    chain = make_chain()
    earlier = asyncio.create_task(store.save(chain.take_changes().as_rows()))
    await asyncio.sleep(0)  # the earlier save takes the lock and starts writing

    await store.save(chain.take_changes().as_rows())  # nothing new: its changes went earlier

    assert earlier.done()
    assert await store.load() is not None


async def test_a_failed_save_writes_nothing(store: SimChainStore, conninfo: str) -> None:
    chain = make_chain()
    await store.save(chain.take_changes().as_rows())
    chain.fund("someone", {"SOL": 5})
    rows = chain.take_changes().as_rows()
    bad_tx = {"signature": "x", "state": "bogus", "owner": "o", "pool": "p", "amount_in": 1,
              "min_amount_out": 1, "x_to_y": True, "last_valid_block_height": 1,
              "land_at": 0.0, "block_height": 0, "amount_out": 0, "error": None,
              "error_code": None, "sent_at": 0.0}

    with pytest.raises(InvalidInput, match="out of range"):  # the driver's error, translated
        await store.save({**rows, "transactions": [bad_tx]})

    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        cur = await conn.execute("SELECT count(*) FROM simchain.balances")
        assert await cur.fetchone() == (0,)
    await store.save(rows)
    loaded = await store.load()
    assert loaded is not None
    assert ChainSnapshot.from_rows(loaded).balances == {("someone", "SOL"): 5}


async def test_an_unreachable_database_is_a_retryable_error() -> None:
    store = SimChainStore("host=127.0.0.1 port=1 user=postgres dbname=none connect_timeout=1")
    await store.db.pool.open()  # without waiting: no connection will ever be ready
    try:
        with pytest.raises(TransientDatabaseError):
            await store.save({"balances": [{"owner": "o", "symbol": "SOL", "amount": 1}]})
    finally:
        await store.close()


async def test_a_failed_start_can_be_retried_instead_of_leaving_a_closed_pool() -> None:
    """psycopg_pool closes a pool whose first wait times out; the next open must work."""
    db = Database("host=127.0.0.1 port=1 user=postgres dbname=none connect_timeout=1")
    for _ in range(2):  # the second attempt used to raise PoolClosed (a 500 upstream)
        with pytest.raises(TransientDatabaseError, match="retry shortly"):
            await db.open(wait_s=0.5)
    await db.close()
