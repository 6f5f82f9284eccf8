"""The simulated chain survives a restart: take_changes -> rows -> snapshot -> restore."""

from __future__ import annotations

import pickle
from decimal import Decimal

import pytest
from solders.keypair import Keypair

from core.errors import BlockhashExpired
from gateways.simulated.chain import PAIRS, START_HEIGHT, ChainChanges, ChainSnapshot, SimChain
from tests.kit.chain import (
    BLOCK_TIME_S,
    SOL,
    T0,
    VALID_BLOCKS,
    RowStore,
    assert_same_chain,
    make_chain,
    restore,
    start_scenario,
    state_of,
    swap_bytes,
)


def test_a_new_chain_s_first_changes_are_a_full_snapshot() -> None:
    chain = make_chain()

    changes = chain.take_changes()

    assert changes.meta is not None
    assert changes.meta.start_height == START_HEIGHT and changes.meta.start_time == T0
    assert len(changes.pools) == 2 * len(PAIRS)
    assert chain.take_changes() == ChainChanges()  # nothing left to save
    rows = RowStore()
    rows.save(changes.as_rows())
    assert state_of(restore(rows.stored())) == state_of(chain)


def test_every_step_s_changes_add_up_to_the_chain_s_whole_state() -> None:
    chain, _, steps = start_scenario()
    store = RowStore()

    for step in steps:
        store.save(chain.take_changes().as_rows())
        assert store.stored() == chain.snapshot(), step


def test_each_mutation_reports_only_what_it_touched() -> None:
    chain = make_chain()
    chain.take_changes()
    wallet = Keypair.from_seed(bytes([1]) * 32)
    owner = str(wallet.pubkey())

    chain.fund(owner, {"SOL": 10 * SOL})
    assert chain.take_changes() == ChainChanges(balances={(owner, "SOL"): 10 * SOL})

    blockhash, _ = chain.latest_blockhash(T0)
    chain.latest_blockhash(T0)  # the same block: nothing new
    assert chain.take_changes() == ChainChanges(blockhashes={blockhash: START_HEIGHT})

    tx = swap_bytes(chain, wallet, T0, amount_in=SOL, memo="order-a:1")
    chain.take_changes()
    sig = chain.send_transaction(tx, T0, 1.0)
    sent = chain.take_changes()
    assert set(sent.transactions) == {sig} and sent.transactions[sig].state == "pending"
    assert sent.transactions[sig].land_at == T0 + 1.0
    assert not sent.pools and not sent.balances and sent.meta is None

    chain.process(T0 + 1.0)
    landed = chain.take_changes()
    pool, _ = chain.find_pool("raydium", "SOL", "USDC")
    assert landed.transactions[sig].state == "confirmed"
    assert set(landed.pools) == {pool.address}
    assert set(landed.balances) == {(owner, "SOL"), (owner, "USDC")}
    assert landed.meta is None

    chain.drift(T0 + 2.0, Decimal(5))
    drifted = chain.take_changes()
    assert drifted.meta is not None and drifted.pools and not drifted.transactions


def test_changes_merge_in_order_and_survive_pickling() -> None:
    chain = make_chain()
    wallet = Keypair.from_seed(bytes([1]) * 32)
    chain.fund(str(wallet.pubkey()), {"SOL": 10 * SOL})
    first = chain.take_changes()
    sig = chain.send_transaction(swap_bytes(chain, wallet, T0, memo="order-a:1"), T0, 1.0)
    second = chain.take_changes()
    chain.process(T0 + 1.0)
    third = chain.take_changes()

    merged = first.merged(second).merged(third)

    assert pickle.loads(pickle.dumps(merged)) == merged  # noqa: S301
    assert merged.transactions[sig].state == "confirmed"
    assert merged.meta == first.meta
    store = RowStore()
    store.save(merged.as_rows())
    assert store.stored() == chain.snapshot()


def test_a_restored_chain_continues_exactly_where_the_old_one_was() -> None:
    original, scenario, steps = start_scenario()
    store = RowStore()
    for _ in steps:
        store.save(original.take_changes().as_rows())

    restored = restore(store.stored())

    assert restored.next_land_at() == original.next_land_at() == T0 + 9.0
    assert_same_chain(restored, original, scenario)


def test_a_restored_chain_s_first_changes_are_only_its_meta() -> None:
    chain = make_chain()
    chain.fund("someone", {"SOL": SOL})
    restored = restore(chain.snapshot())

    changes = restored.take_changes()

    assert changes == ChainChanges(meta=chain.snapshot().meta)


def test_a_new_block_time_rebases_the_clock_without_a_jump() -> None:
    chain = make_chain()
    now = T0 + 100.0
    height = chain.block_height(now)

    with pytest.raises(ValueError, match="pass now"):
        SimChain.restore(chain.snapshot(), block_time_s=0.2, blockhash_valid_blocks=VALID_BLOCKS)
    faster = SimChain.restore(chain.snapshot(), block_time_s=0.2,
                              blockhash_valid_blocks=VALID_BLOCKS, now=now)

    assert faster.block_height(now) == height
    assert faster.block_height(now + 1.0) == height + 5
    meta = faster.take_changes().meta
    assert meta is not None and (meta.start_time, meta.start_height) == (now, height)
    # Restarted again with the same block time, the re-based clock carries on.
    again = SimChain.restore(faster.snapshot(), block_time_s=0.2,
                             blockhash_valid_blocks=VALID_BLOCKS)
    assert again.block_height(now + 2.0) == height + 10


def test_from_rows_needs_exactly_one_meta_row() -> None:
    rows = make_chain().snapshot().as_rows()

    with pytest.raises(ValueError, match="exactly one meta row"):
        ChainSnapshot.from_rows({**rows, "meta": []})


def test_long_expired_blockhashes_are_forgotten_and_deleted_from_the_store() -> None:
    chain, store = make_chain(), RowStore()
    wallet = Keypair.from_seed(bytes([1]) * 32)
    chain.fund(str(wallet.pubkey()), {"SOL": 10 * SOL})
    old_tx = swap_bytes(chain, wallet, T0, memo="old:1")  # signed with the first blockhash
    issued = []
    for k in range(10 * VALID_BLOCKS):  # a new block each time it is asked
        issued.append(chain.latest_blockhash(T0 + k * BLOCK_TIME_S)[0])
        if k % 97 == 0:
            store.save(chain.take_changes().as_rows())
    store.save(chain.take_changes().as_rows())
    now = T0 + 10 * VALID_BLOCKS * BLOCK_TIME_S
    assert len(chain.snapshot().blockhashes) <= 4 * VALID_BLOCKS  # bounded, not 1,500
    stored = store.load()
    assert stored is not None
    assert len(stored["blockhashes"]) == len(chain.snapshot().blockhashes)
    assert ChainSnapshot.from_rows(stored) == chain.snapshot()
    with pytest.raises(BlockhashExpired):  # forgotten: refused like an expired one
        chain.send_transaction(old_tx, now, 0.0)
    # Every blockhash still valid, or expired within the last two windows, is still known.
    known = chain.snapshot().blockhashes
    assert all(b in known for b in issued[-2 * VALID_BLOCKS:])
    assert issued[0] not in known
