"""Unit tests for ChainServer: the simulated chain's start-up, the venues' quote and send calls,
and what it saves, over an in-memory store and a fake clock."""

from __future__ import annotations

import asyncio
import functools
from decimal import Decimal
from typing import Any

import pytest
from solders.keypair import Keypair
from solders.transaction import Transaction

from core.errors import InvalidInput, TransientDatabaseError, VenueUnavailable
from core.retry import retry_until_done
from gateways.simulated import server as server_module
from gateways.simulated.chain import ChainRows
from gateways.simulated.program import build_swap_transaction
from gateways.simulated.schema import PoolQuote
from gateways.simulated.server import (
    DEV_FUNDING,
    FUNDED_SYMBOLS,
    ChainParameters,
    ChainServer,
    Faults,
    VenueBehaviour,
)
from tests.kit.clock import FakeClock
from tests.kit.loop import settle, until

T0 = 1_700_000_000.0
SOL = 10**9
WALLET = Keypair.from_seed(bytes([3]) * 32)


class FakeStore:
    """A ChainStore in memory: `rows` is what load answers, `saves` what save was given."""

    def __init__(self, rows: ChainRows | None = None, *, failing_opens: int = 0,
                 failing_saves: int = 0) -> None:
        self.rows = rows
        self.failing_opens = failing_opens
        self.failing_saves = failing_saves
        self.opens = 0
        self.loads = 0
        self.saves: list[ChainRows] = []
        self.hold: asyncio.Event | None = None  # set: a save waits for it

    async def open(self) -> None:
        self.opens += 1
        if self.failing_opens:
            self.failing_opens -= 1
            raise TransientDatabaseError("the database is starting up")

    async def load(self) -> ChainRows | None:
        self.loads += 1
        return self.rows

    async def save(self, changes: ChainRows) -> None:
        if self.hold is not None:
            await self.hold.wait()
        if self.failing_saves:
            self.failing_saves -= 1
            raise TransientDatabaseError("the database went away")
        self.saves.append(changes)

    def saved(self, table: str) -> list[dict[str, Any]]:
        return [row for rows in self.saves for row in rows.get(table, [])]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The chain's clock; start-up retries wait on it too (ChainServer passes no sleep)."""
    fake = FakeClock(start=T0)
    monkeypatch.setattr(server_module, "retry_until_done",
                        functools.partial(retry_until_done, sleep=fake.sleep))
    return fake


def venues(meteora_quote_ms: tuple[int, int] = (0, 0)) -> list[VenueBehaviour]:
    return [VenueBehaviour("raydium", quote_latency_ms=(0, 0), swap_latency_ms=(0, 0),
                           faults=Faults(), seed=7),
            VenueBehaviour("meteora", quote_latency_ms=meteora_quote_ms,
                           swap_latency_ms=(0, 0), faults=Faults(), seed=7)]


def params(drift_interval_s: float = 0.0, adverse_move_bps: int = 0) -> ChainParameters:
    return ChainParameters(seed=7, block_time_s=0.4, blockhash_valid_blocks=150,
                           drift_interval_s=drift_interval_s, drift_bps=Decimal(10),
                           adverse_move_bps=adverse_move_bps)


def make_server(store: FakeStore, clock: FakeClock, adverse_move_bps: int = 0,
                **kwargs: Any) -> ChainServer:
    return ChainServer(store, venues(**kwargs), params(adverse_move_bps=adverse_move_bps),
                       wallet=str(WALLET.pubkey()), clock=clock)


async def signed_swap(server: ChainServer, venue: str = "raydium", memo: str = "o-1:1",
                      amount_in: int = SOL) -> bytes:
    """Quote, then build and sign the swap as a gateway does."""
    quote = await server.quote(venue, "SOL", "USDC", amount_in)
    blockhash, _ = await server.latest_blockhash()
    tx = build_swap_transaction(WALLET, quote.pool, amount_in, quote.amount_out * 99 // 100,
                                quote.x_to_y, blockhash, memo=memo)
    return bytes(tx)


def signature_of(tx: bytes) -> str:
    return str(Transaction.from_bytes(tx).signatures[0])


def drift_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "") == "ChainServer._drift_loop"]


# --- start-up -----------------------------------------------------------------------------------


async def test_an_empty_store_gets_a_new_chain_with_the_wallet_funded(clock: FakeClock) -> None:
    store = FakeStore()
    store.hold = asyncio.Event()
    server = make_server(store, clock, adverse_move_bps=25)
    server.start()
    server.start()  # a second start loads nothing again
    ready = asyncio.get_running_loop().create_task(server.ready())
    await settle()
    assert not ready.done()  # the new chain answers nobody before it is saved
    store.hold.set()
    chain = await asyncio.wait_for(ready, 2)

    assert (store.opens, store.loads) == (1, 1)
    assert chain.adverse_move_bps == 25
    wallet = str(WALLET.pubkey())
    for symbol in FUNDED_SYMBOLS:
        assert chain.balances[(wallet, symbol)] == DEV_FUNDING
    assert len(store.saves) == 1
    (meta,) = store.saved("meta")
    assert meta["seed"] == 7 and meta["start_time"] == T0
    assert {(r["owner"], r["symbol"]): r["amount"] for r in store.saved("balances")} == {
        (wallet, symbol): DEV_FUNDING for symbol in FUNDED_SYMBOLS}
    assert store.saved("pools")  # the market is saved with it


async def test_a_stored_chain_is_restored_not_created_again(clock: FakeClock) -> None:
    first = make_server(FakeStore(), clock)
    tx = await signed_swap(first)
    (signature,) = await first.send_many([("raydium", tx)])
    first_chain = await first.ready()
    before = first_chain.snapshot()

    clock.advance(60)
    store = FakeStore(rows=before.as_rows())
    chain = await make_server(store, clock, adverse_move_bps=40).ready()

    assert chain.adverse_move_bps == 40
    assert chain.balances == before.balances  # the wallet is not funded a second time
    (status,) = chain.signature_statuses([signature], clock())
    assert status is not None and status.confirmed
    assert chain.snapshot().meta.start_time == T0  # the chain's clock goes on
    assert chain.block_height(clock()) == first_chain.block_height(clock())


async def test_a_store_that_cannot_open_yet_is_tried_again(clock: FakeClock) -> None:
    store = FakeStore(failing_opens=2)
    chain = await make_server(store, clock).ready()
    assert store.opens == 3 and store.loads == 1
    assert clock.sleeps == [0.5, 1.0]  # backing off
    assert chain.balances[(str(WALLET.pubkey()), "SOL")] == DEV_FUNDING
    assert len(store.saves) == 1


async def test_a_start_that_could_not_be_saved_is_saved_with_the_next_change(
        clock: FakeClock) -> None:
    store = FakeStore(failing_saves=1)
    server = make_server(store, clock)
    await server.ready()  # the chain answers even though its start is not saved yet
    assert store.saves == []

    tx = await signed_swap(server)
    await server.send_many([("raydium", tx)])
    assert len(store.saved("meta")) == 1
    assert {r["symbol"] for r in store.saved("balances")} >= set(FUNDED_SYMBOLS)
    assert [r["signature"] for r in store.saved("transactions")] == [signature_of(tx)]


# --- the venues' servers ------------------------------------------------------------------------


async def test_a_quote_is_the_venues_pool_quote(clock: FakeClock) -> None:
    server = make_server(FakeStore(), clock)  # not started: the quote waits for the chain
    quote = await server.quote("raydium", "SOL", "USDC", SOL)
    chain = await server.ready()
    assert isinstance(quote, PoolQuote)
    assert quote == chain.quote("raydium", "SOL", "USDC", SOL, clock())
    assert quote.amount_out > 0 and quote.x_to_y
    other = await server.quote("meteora", "SOL", "USDC", SOL)
    assert other.pool != quote.pool


async def test_an_injected_failure_fails_that_venues_next_quote_only(clock: FakeClock) -> None:
    server = make_server(FakeStore(), clock)
    server.set_faults("raydium", fail_next=1)
    await server.quote("meteora", "SOL", "USDC", SOL)  # another venue is not affected
    with pytest.raises(VenueUnavailable, match="injected") as raised:
        await server.quote("raydium", "SOL", "USDC", SOL)
    assert raised.value.venue == "raydium"
    await server.quote("raydium", "SOL", "USDC", SOL)

    server.set_faults("raydium", down=True)
    with pytest.raises(VenueUnavailable, match="down"):
        await server.quote("raydium", "SOL", "USDC", SOL)


async def test_an_unknown_venue_is_unavailable(clock: FakeClock) -> None:
    server = make_server(FakeStore(), clock)
    with pytest.raises(VenueUnavailable, match="no venue named orca"):
        await server.quote("orca", "SOL", "USDC", SOL)
    with pytest.raises(VenueUnavailable, match="no venue named orca"):
        server.set_faults("orca", down=True)


async def test_send_many_answers_each_item_and_saves_the_accepted_before_answering(
        clock: FakeClock) -> None:
    store = FakeStore()
    server = make_server(store, clock)
    good = await signed_swap(server, "raydium", memo="o-1:1")
    other = await signed_swap(server, "meteora", memo="o-2:1")
    saved_before = len(store.saves)
    store.hold = asyncio.Event()

    sending = asyncio.get_running_loop().create_task(server.send_many([
        ("raydium", good), ("raydium", b"not a transaction"), ("orca", other),
        ("meteora", other)]))
    await settle()
    assert not sending.done()  # accepted is not answered until it is durable
    store.hold.set()
    answers = await asyncio.wait_for(sending, 2)

    assert answers[0] == signature_of(good)
    assert isinstance(answers[1], InvalidInput)
    assert isinstance(answers[2], VenueUnavailable) and answers[2].venue == "orca"
    assert answers[3] == signature_of(other)
    saved = {r["signature"]: r for rows in store.saves[saved_before:]
             for r in rows.get("transactions", [])}
    assert set(saved) == {signature_of(good), signature_of(other)}
    assert {r["state"] for r in saved.values()} == {"confirmed"}  # no swap latency: landed


async def test_a_send_refused_by_an_injected_failure_never_reaches_the_chain(
        clock: FakeClock) -> None:
    server = make_server(FakeStore(), clock)
    tx = await signed_swap(server)
    server.set_faults("raydium", fail_next=1)
    (refused,) = await server.send_many([("raydium", tx)])
    assert isinstance(refused, VenueUnavailable)
    assert await server.signature_statuses([signature_of(tx)]) == [None]
    assert await server.send_many([("raydium", tx)]) == [signature_of(tx)]


async def test_quote_delays_follow_each_venues_latency(clock: FakeClock) -> None:
    server = make_server(FakeStore(), clock, meteora_quote_ms=(50, 200))
    for _ in range(20):
        zero, unknown, drawn = server.quote_delays(["raydium", "orca", "meteora"])
        assert zero == 0.0 and unknown == 0.0
        assert 0.05 <= drawn <= 0.2


@pytest.mark.parametrize(("interval_s", "loops"), [(0.0, 0), (3_600.0, 1)])
async def test_prices_drift_only_with_an_interval(clock: FakeClock, interval_s: float,
                                                  loops: int) -> None:
    server = ChainServer(FakeStore(), venues(), params(drift_interval_s=interval_s),
                         wallet=str(WALLET.pubkey()), clock=clock)
    try:
        await server.ready()
        await until(lambda: len(drift_tasks()) == loops)
        await settle()
        assert len(drift_tasks()) == loops
    finally:
        for task in drift_tasks():
            task.cancel()
        await settle()
