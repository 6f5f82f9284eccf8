"""A simulated chain to test against: builders, an in-memory row store and a replayable scenario.

The unit tests of the simulated chain and the integration test of storage.simchain share
these: a scenario driven through a chain, saved in rounds and restored, must behave as the
original did.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from solders.keypair import Keypair

from gateways.simulated.chain import PAIRS, START_HEIGHT, ChainRows, ChainSnapshot, SimChain
from gateways.simulated.program import build_swap_transaction

T0 = 1_700_000_000.0
BLOCK_TIME_S = 0.4
VALID_BLOCKS = 150
SOL = 10**9  # base units of one SOL
USDC = 10**6  # base units of one USDC
CRASH_AT = T0 + 8.0  # the scenario's last step runs before this
RESTART_AT = T0 + 8.5


def make_chain(seed: int = 7) -> SimChain:
    return SimChain(seed=seed, block_time_s=BLOCK_TIME_S, blockhash_valid_blocks=VALID_BLOCKS,
                    start_time=T0)


def restore(snapshot: ChainSnapshot) -> SimChain:
    return SimChain.restore(snapshot, block_time_s=BLOCK_TIME_S,
                            blockhash_valid_blocks=VALID_BLOCKS)


def signed_swap(
    chain: SimChain, wallet: Keypair, *, venue: str = "raydium", sell: str = "SOL",
    buy: str = "USDC", amount_in: int = SOL, slippage_bps: int = 50, now: float = T0,
    min_out: int | None = None, memo: str = "order-1:1",
) -> tuple[bytes, int, int]:
    """Quote, then build and sign the swap as a gateway does; return (bytes, quoted, min_out)."""
    quote = chain.quote(venue, sell, buy, amount_in, now)
    blockhash, _ = chain.latest_blockhash(now)
    if min_out is None:
        min_out = quote.amount_out * (10_000 - slippage_bps) // 10_000
    tx = build_swap_transaction(wallet, quote.pool, amount_in, min_out, quote.x_to_y, blockhash,
                                memo=memo)
    return bytes(tx), quote.amount_out, min_out


def swap_bytes(chain: SimChain, wallet: Keypair, now: float, *, memo: str,
               **swap: Any) -> bytes:
    """Return the signed bytes of a swap quoted at `now` (50 bps slippage unless `min_out`)."""
    tx, _, _ = signed_swap(chain, wallet, now=now, memo=memo, **swap)
    return tx


# Each table's primary key, as in storage/migrations/002_simchain.sql.
ROW_KEYS: dict[str, tuple[str, ...]] = {
    "meta": (),
    "transactions": ("signature",),
    "pools": ("address",),
    "balances": ("owner", "symbol"),
    "blockhashes": ("blockhash",),
}


class RowStore:
    """An in-memory stand-in for storage.simchain.SimChainStore: upserts rows by key."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {t: {} for t in ROW_KEYS}

    def save(self, rows: ChainRows) -> None:
        for table, table_rows in rows.items():
            if table == "blockhash_floor":  # as storage.simchain: delete what was forgotten
                floor = max(int(r["height"]) for r in table_rows)
                self.tables["blockhashes"] = {k: r for k, r in self.tables["blockhashes"].items()
                                              if r["height"] >= floor}
                continue
            for row in table_rows:
                self.tables[table][tuple(row[k] for k in ROW_KEYS[table])] = dict(row)

    def load(self) -> ChainRows | None:
        if not self.tables["meta"]:
            return None
        return {table: list(rows.values()) for table, rows in self.tables.items()}

    def stored(self) -> ChainSnapshot:
        """Return what was saved as a snapshot; fail the test when nothing was."""
        rows = self.load()
        assert rows is not None, "nothing was saved"
        return ChainSnapshot.from_rows(rows)


@dataclass
class Scenario:
    """What a scenario did, so tests can check the restored chain against the original."""

    wallet: Keypair
    signed: dict[str, bytes] = field(default_factory=dict)  # name -> sent transaction bytes
    sigs: dict[str, str] = field(default_factory=dict)  # name -> signature
    unsent: bytes = b""  # signed before the crash with a then-current blockhash, never sent


def run_scenario(chain: SimChain, scenario: Scenario) -> Iterator[str]:
    """Drive the chain through fundings, landings, failures, drift and pending sends.

    Yields after each step (its name) so the caller can save the changes in rounds.
    """
    wallet = scenario.wallet
    owner = str(wallet.pubkey())
    poor = Keypair.from_seed(bytes([9]) * 32)

    def send(name: str, now: float, delay: float, **swap: Any) -> None:
        tx = swap_bytes(chain, swap.pop("signer", wallet), now, memo=f"order-{name}:1", **swap)
        scenario.signed[name] = tx
        scenario.sigs[name] = chain.send_transaction(tx, now, delay)

    chain.fund(owner, {"SOL": 1_000 * SOL, "USDC": 100_000 * USDC})
    chain.fund(str(poor.pubkey()), {"USDC": 5 * USDC})
    yield "funded"
    send("ok", T0 + 1.0, 0.0, amount_in=2 * SOL)
    yield "landed"
    for i in range(3):
        chain.drift(T0 + 2.0 + i * 0.1, Decimal(5))
    yield "drifted"
    send("slippage", T0 + 3.0, 0.0, venue="meteora", min_out=10**15)
    send("poor", T0 + 3.1, 0.0, signer=poor, sell="SOL", buy="USDC")
    yield "failed"
    send("meteora", T0 + 4.0, 0.0, venue="meteora", amount_in=300 * SOL)
    send("reverse", T0 + 4.5, 0.5, sell="USDC", buy="SOL", amount_in=300 * USDC)
    chain.process(T0 + 5.0)
    yield "landed-after-delay"
    send("pending", T0 + 6.0, 3.0, sell="USDC", buy="SOL", amount_in=500 * USDC)
    send("pending-late", T0 + 6.5, 30.0, venue="meteora", amount_in=5 * SOL)
    # Lands only after its last valid block: the chain must drop it, also after a restart.
    send("doomed", T0 + 7.0, (VALID_BLOCKS + 5) * BLOCK_TIME_S, amount_in=SOL)
    chain.drift(T0 + 7.5, Decimal(5))
    scenario.unsent = swap_bytes(chain, wallet, T0 + 7.9, amount_in=SOL // 2,
                                 memo="order-unsent:1")
    yield "pending"


def start_scenario() -> tuple[SimChain, Scenario, Iterator[str]]:
    """Return a new chain, the record of the scenario about to run on it, and the scenario's
    steps: each runs when the iterator is advanced (see run_scenario)."""
    chain = make_chain()
    scenario = Scenario(Keypair.from_seed(bytes([1]) * 32))
    return chain, scenario, run_scenario(chain, scenario)


def state_of(chain: SimChain) -> dict[str, Any]:
    """Return the chain's full state with pools unpickled, for equality checks."""
    snap = chain.snapshot()
    pools = {a: vars(pickle.loads(s)) for a, s in snap.pools.items()}  # noqa: S301
    return {"meta": snap.meta, "transactions": snap.transactions, "pools": pools,
            "balances": snap.balances, "blockhashes": snap.blockhashes}


def spot_prices(chain: SimChain) -> dict[tuple[str, str, str], Decimal]:
    return {(v, x, y): chain.spot_price(v, x, y)
            for v in ("raydium", "meteora") for x, y, *_ in PAIRS}


def assert_same_chain(restored: SimChain, original: SimChain, scenario: Scenario) -> None:
    """Assert that `restored` behaves as `original` from the restart on."""
    assert state_of(restored) == state_of(original)
    assert restored.block_height(RESTART_AT) == original.block_height(RESTART_AT)
    assert restored.block_height(RESTART_AT) == START_HEIGHT + int((RESTART_AT - T0) / 0.4)
    sigs = list(scenario.sigs.values())
    # Before anything else happens: the same answer for every signature.
    assert restored.signature_statuses(sigs, RESTART_AT) == original.signature_statuses(
        sigs, RESTART_AT)
    statuses = dict(zip(scenario.sigs, restored.signature_statuses(sigs, RESTART_AT),
                        strict=True))
    assert statuses["ok"] is not None and statuses["ok"].confirmed
    assert statuses["slippage"] is not None and statuses["slippage"].error_code == (
        "slippage_exceeded")
    assert statuses["poor"] is not None and statuses["poor"].error_code == "insufficient_funds"
    assert statuses["pending"] is None and statuses["doomed"] is None
    assert restored.spot_price("raydium", "SOL", "USDC") == original.spot_price(
        "raydium", "SOL", "USDC")
    owner = str(scenario.wallet.pubkey())
    sol_before = restored.balances[(owner, "SOL")]

    # A duplicate of an executed transaction executes once, after the restart as before it.
    assert restored.send_transaction(scenario.signed["ok"], RESTART_AT, 0.0) == scenario.sigs["ok"]
    assert restored.executed_swaps([scenario.sigs["ok"]]) == 1
    # So does a resend of a transaction still in flight: it keeps its landing time.
    restored.send_transaction(scenario.signed["pending"], RESTART_AT, 0.0)
    assert restored.balances[(owner, "SOL")] == sol_before

    # Pending transactions land (or drop) as they would have without the restart.
    for now in (T0 + 9.5, T0 + 40.0, T0 + 7.0 + (VALID_BLOCKS + 6) * BLOCK_TIME_S):
        assert restored.signature_statuses(sigs, now) == original.signature_statuses(sigs, now)
        if now == T0 + 9.5:
            (pending,) = restored.signature_statuses([scenario.sigs["pending"]], now)
            assert pending is not None and pending.confirmed
            assert pending.block_height == restored.block_height(T0 + 9.0)
            assert restored.balances[(owner, "SOL")] == sol_before + pending.amount_out
    landed = dict(zip(scenario.sigs, restored.signature_statuses(sigs, T0 + 100), strict=True))
    assert landed["pending-late"] is not None and landed["pending-late"].confirmed
    assert landed["doomed"] is None  # expired before it could land: provably absent
    executed = ["ok", "meteora", "reverse", "pending", "pending-late"]
    assert {n for n, s in scenario.sigs.items() if restored.executed_swaps([s])} == set(executed)
    assert original.executed_swaps(sigs) == len(executed)

    # A blockhash issued before the crash is still known after it.
    unsent_sig = restored.send_transaction(scenario.unsent, T0 + 60.0, 0.0)
    assert restored.executed_swaps([unsent_sig]) == 1
    original.send_transaction(scenario.unsent, T0 + 60.0, 0.0)

    # The market keeps the same random walk, and the clock keeps counting.
    restored.drift(T0 + 61.0, Decimal(5))
    original.drift(T0 + 61.0, Decimal(5))
    assert spot_prices(restored) == spot_prices(original)
    assert restored.block_height(T0 + 400) == original.block_height(T0 + 400) == (
        START_HEIGHT + 1000)
    assert state_of(restored) == state_of(original)
