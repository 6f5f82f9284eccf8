"""ChainJournal: the simulated chain answers only with what is saved, and waits only then."""

from __future__ import annotations

import asyncio

import pytest
from solders.keypair import Keypair

from gateways.simulated.chain import ChainRows, SimChain
from gateways.simulated.journal import ChainJournal
from tests.kit.chain import SOL, T0, RowStore, make_chain, swap_bytes
from tests.kit.loop import settle


class GatedStore(RowStore):
    """A row store whose saves wait for the test to open the gate; counts the saves."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.saves = 0
        self.fail_next = False

    async def save_async(self, rows: ChainRows) -> None:
        self.saves += 1
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("database went away")
        self.save(rows)


def funded_chain() -> tuple[SimChain, Keypair]:
    chain = make_chain()
    wallet = Keypair.from_seed(bytes([1]) * 32)
    chain.fund(str(wallet.pubkey()), {"SOL": 100 * SOL})
    return chain, wallet


async def test_a_saved_landing_is_reported_without_another_save() -> None:
    chain, wallet = funded_chain()
    store = GatedStore()
    journal = ChainJournal(chain, store.save_async)
    sig = chain.send_transaction(swap_bytes(chain, wallet, T0, memo="a:1"), T0, 0.0)
    assert not journal.durable([sig])
    await journal.persist()
    assert journal.durable([sig]) and store.saves == 1
    await journal.persist_unless_durable([sig])
    await journal.persist()  # nothing changed since: no save either
    assert store.saves == 1


async def test_a_landing_being_saved_is_not_durable_until_the_save_ends() -> None:
    chain, wallet = funded_chain()
    store = GatedStore()
    journal = ChainJournal(chain, store.save_async)
    await journal.persist()
    sig = chain.send_transaction(swap_bytes(chain, wallet, T0, memo="a:1"), T0, 0.0)
    store.gate.clear()
    saving = asyncio.create_task(journal.persist())
    await asyncio.sleep(0)
    assert chain.has_changes() is False  # taken by the save in flight
    assert not journal.durable([sig])
    poll = asyncio.create_task(journal.persist_unless_durable([sig]))
    await settle()
    assert not poll.done()  # never reports what a crash could still undo
    store.gate.set()
    await asyncio.gather(saving, poll)
    assert journal.durable([sig])
    stored = {row["signature"]: row["state"] for row in store.load()["transactions"]}
    assert stored[sig] == "confirmed"


async def test_an_unrelated_save_in_flight_does_not_hold_up_a_saved_answer() -> None:
    chain, wallet = funded_chain()
    store = GatedStore()
    journal = ChainJournal(chain, store.save_async)
    first = chain.send_transaction(swap_bytes(chain, wallet, T0, memo="a:1"), T0, 0.0)
    await journal.persist()
    chain.send_transaction(swap_bytes(chain, wallet, T0, memo="b:1"), T0, 0.0)
    store.gate.clear()
    saving = asyncio.create_task(journal.persist())
    await asyncio.sleep(0)
    await asyncio.wait_for(journal.persist_unless_durable([first]), 1.0)
    store.gate.set()
    await saving


async def test_a_failed_save_keeps_its_changes_for_the_next_one() -> None:
    chain, wallet = funded_chain()
    store = GatedStore()
    journal = ChainJournal(chain, store.save_async)
    blockhash, _ = chain.latest_blockhash(T0)
    sig = chain.send_transaction(swap_bytes(chain, wallet, T0, memo="a:1"), T0, 0.0)
    store.fail_next = True
    with pytest.raises(ConnectionError):
        await journal.persist()
    assert not chain.has_changes()  # taken by the failed save, kept by the journal
    assert not journal.durable([sig]) and not journal.durable(blockhashes=[blockhash])
    await journal.persist_unless_durable([sig])
    assert journal.durable([sig], [blockhash])
    rows = store.load()
    assert rows is not None
    assert sig in {row["signature"] for row in rows["transactions"]}
    assert blockhash in {row["blockhash"] for row in rows["blockhashes"]}


async def test_concurrent_callers_share_one_save() -> None:
    chain, wallet = funded_chain()
    store = GatedStore()
    journal = ChainJournal(chain, store.save_async)
    await journal.persist()
    chain.send_transaction(swap_bytes(chain, wallet, T0, memo="a:1"), T0, 0.0)
    store.gate.clear()
    first = asyncio.create_task(journal.persist())
    await asyncio.sleep(0)
    chain.send_transaction(swap_bytes(chain, wallet, T0, memo="b:1"), T0, 0.0)
    later = [asyncio.create_task(journal.persist()) for _ in range(5)]
    await asyncio.sleep(0)
    store.gate.set()
    await asyncio.gather(first, *later)
    assert store.saves == 3  # the start, the first, then one for all five later callers
    assert not chain.has_changes()
