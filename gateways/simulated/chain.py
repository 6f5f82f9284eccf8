"""A simulated Solana chain: pools, balances, block height, and transactions by signature.

It keeps the properties the engine's guarantees rest on: signatures are real ed25519
signatures over real transactions, a blockhash is valid for a bounded number of blocks, a
transaction that has not landed by then never will, the same signed transaction sent twice
executes once, and a failed swap changes nothing but still lands with its error.

Real Solana outlives the engine, so the chain can be made durable without this package
knowing any database: `SimChain.take_changes()` returns what changed since the last call as a
`ChainChanges` (plain, picklable data), `as_rows()` turns it into plain rows
(`ChainRows`) that a store upserts, and `ChainSnapshot.from_rows()` plus `SimChain.restore()`
rebuild the chain from the rows a store loads back.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from typing import Any

from solders.hash import Hash
from solders.keypair import Keypair
from solders.transaction import Transaction

from core.errors import (
    BlockhashExpired,
    InsufficientLiquidity,
    InvalidInput,
    NoRoute,
)
from core.quotes import VENUES, TxStatus
from core.tokens import DEFAULT_TOKENS
from gateways.simulated import pools as pool_math
from gateways.simulated.program import decode_swap, pool_address
from gateways.simulated.schema import PoolQuote

log = logging.getLogger(__name__)

# Reference prices in USD used to seed pools; the venues start a few percent apart.
REFERENCE_USD: dict[str, Decimal] = {
    "SOL": Decimal(150),
    "USDC": Decimal(1),
    "USDT": Decimal("1.0002"),
    "RAY": Decimal("2.1"),
}
DECIMALS: dict[str, int] = {t.symbol: t.decimals for t in DEFAULT_TOKENS}
# (x, y, Raydium reserve of x in UI units, Meteora bin step, Meteora x per bin in UI units)
PAIRS: tuple[tuple[str, str, int, int, int], ...] = (
    ("SOL", "USDC", 200_000, 10, 400),
    ("SOL", "USDT", 60_000, 10, 150),
    ("USDC", "USDT", 20_000_000, 1, 100_000),
    ("RAY", "SOL", 3_000_000, 25, 6_000),
    ("RAY", "USDC", 2_000_000, 25, 5_000),
)
TX_FEE_LAMPORTS = 5000
START_HEIGHT = 250_000_000
_PICKLE_PROTOCOL = 5

# The plain shape a store writes and reads back: table name -> rows, each row a dict of
# column -> plain value (str, int, float, bool, bytes, None, dict[str, str]). Tables:
#   meta         0 or 1 row: seed, start_time, start_height, block_time_s, valid_blocks,
#                fair_prices ({"SOL/USDC": "150.0", ...}), rng_state (opaque JSON text)
#   transactions signature, state, owner, pool, amount_in, min_amount_out, x_to_y,
#                last_valid_block_height, land_at, block_height, amount_out, error, error_code,
#                sent_at
#   pools        address, state (opaque bytes)
#   balances     owner, symbol, amount
#   blockhashes  blockhash, height
ChainRows = dict[str, list[dict[str, Any]]]


@dataclass
class TxRecord:
    """One transaction as the chain knows it, pending or landed (plain data).

    The chain mutates its own records as transactions land; what it hands out (changes,
    snapshots) are copies, so they never change after the fact.
    """

    signature: str
    owner: str
    pool: str
    amount_in: int
    min_amount_out: int
    x_to_y: bool
    last_valid_block_height: int
    land_at: float
    state: str = "pending"  # pending, confirmed, failed, dropped
    block_height: int = 0
    amount_out: int = 0
    error: str | None = None
    error_code: str | None = None
    sent_at: float = 0.0  # when the chain accepted it

    def copy(self) -> TxRecord:
        return replace(self)


@dataclass(frozen=True)
class ChainMeta:
    """The chain's clock, parameters and market: everything that is not a keyed record."""

    seed: int
    start_time: float  # t0: height is start_height + (now - t0) / block_time_s
    start_height: int
    block_time_s: float
    valid_blocks: int
    fair_prices: dict[str, str]  # "X/Y" -> fair price of X in Y (UI units), a Decimal string
    rng_state: str  # JSON of random.Random.getstate(), so drift continues where it stopped


@dataclass(frozen=True)
class ChainChanges:
    """What changed on the chain since the last `SimChain.take_changes()` (plain data).

    Pool states are opaque bytes (pickled pool objects); store them as they are. Apply
    change sets in the order they were taken: a later one overrides an earlier one key by key.
    """

    meta: ChainMeta | None = None  # None when the meta did not change
    transactions: dict[str, TxRecord] = field(default_factory=dict)  # by signature
    pools: dict[str, bytes] = field(default_factory=dict)  # by pool address
    balances: dict[tuple[str, str], int] = field(default_factory=dict)  # (owner, symbol)
    blockhashes: dict[str, int] = field(default_factory=dict)  # blockhash -> issued height
    # Every blockhash issued below this height was forgotten (long expired): delete them too.
    blockhash_floor: int | None = None

    def merged(self, later: ChainChanges) -> ChainChanges:
        """Return one change set equal to applying self, then `later` (e.g. after a failed save)."""
        return ChainChanges(
            later.meta if later.meta is not None else self.meta,
            {**self.transactions, **later.transactions},
            {**self.pools, **later.pools},
            {**self.balances, **later.balances},
            {**self.blockhashes, **later.blockhashes},
            later.blockhash_floor if later.blockhash_floor is not None else self.blockhash_floor,
        )

    def as_rows(self) -> ChainRows:
        """Return the changes as plain rows per table (see `ChainRows`) for a store to upsert."""
        rows = _as_rows(self.meta, self.transactions, self.pools, self.balances,
                        self.blockhashes)
        if self.blockhash_floor is not None:
            rows["blockhash_floor"] = [{"height": self.blockhash_floor}]
        return rows


@dataclass(frozen=True)
class ChainSnapshot:
    """The whole state of a chain, as `SimChain.restore()` takes it (plain data)."""

    meta: ChainMeta
    transactions: dict[str, TxRecord]
    pools: dict[str, bytes]
    balances: dict[tuple[str, str], int]
    blockhashes: dict[str, int]

    def as_rows(self) -> ChainRows:
        """Return the snapshot as plain rows per table (see `ChainRows`)."""
        return _as_rows(self.meta, self.transactions, self.pools, self.balances,
                        self.blockhashes)

    @classmethod
    def from_rows(cls, rows: Mapping[str, list[dict[str, Any]]]) -> ChainSnapshot:
        """Build a snapshot from every stored row (the shape `as_rows()` returns).

        Raise ValueError unless there is exactly one meta row. Numeric columns may come back
        as Decimal or memoryview from a database; they are normalised here.
        """
        metas = rows.get("meta", [])
        if len(metas) != 1:
            raise ValueError(f"a chain snapshot needs exactly one meta row, got {len(metas)}")
        m = metas[0]
        meta = ChainMeta(
            seed=int(m["seed"]),
            start_time=float(m["start_time"]),
            start_height=int(m["start_height"]),
            block_time_s=float(m["block_time_s"]),
            valid_blocks=int(m["valid_blocks"]),
            fair_prices={str(k): str(v) for k, v in dict(m["fair_prices"]).items()},
            rng_state=str(m["rng_state"]),
        )
        transactions = {
            str(r["signature"]): TxRecord(
                signature=str(r["signature"]),
                state=str(r["state"]),
                owner=str(r["owner"]),
                pool=str(r["pool"]),
                amount_in=int(r["amount_in"]),
                min_amount_out=int(r["min_amount_out"]),
                x_to_y=bool(r["x_to_y"]),
                last_valid_block_height=int(r["last_valid_block_height"]),
                land_at=float(r["land_at"]),
                block_height=int(r["block_height"]),
                amount_out=int(r["amount_out"]),
                error=r["error"],
                error_code=r["error_code"],
                sent_at=float(r.get("sent_at") or 0.0),
            )
            for r in rows.get("transactions", [])
        }
        return cls(
            meta=meta,
            transactions=transactions,
            pools={str(r["address"]): bytes(r["state"]) for r in rows.get("pools", [])},
            balances={
                (str(r["owner"]), str(r["symbol"])): int(r["amount"])
                for r in rows.get("balances", [])
            },
            blockhashes={
                str(r["blockhash"]): int(r["height"]) for r in rows.get("blockhashes", [])
            },
        )


def _as_rows(
    meta: ChainMeta | None,
    transactions: Mapping[str, TxRecord],
    pools: Mapping[str, bytes],
    balances: Mapping[tuple[str, str], int],
    blockhashes: Mapping[str, int],
) -> ChainRows:
    return {
        "meta": [asdict(meta)] if meta is not None else [],
        "transactions": [asdict(tx) for tx in transactions.values()],
        "pools": [{"address": a, "state": s} for a, s in pools.items()],
        "balances": [{"owner": o, "symbol": s, "amount": v} for (o, s), v in balances.items()],
        "blockhashes": [{"blockhash": b, "height": h} for b, h in blockhashes.items()],
    }


def _pair_key(x: str, y: str) -> str:
    return f"{x}/{y}"


@dataclass
class _PoolEntry:
    venue: str
    pool: pool_math.Pool
    offset: Decimal  # the venue's persistent premium over the pair's fair price
    history: list[Decimal] = field(default_factory=list)


class SimChain:
    """The state of the simulated chain; every method takes the current time explicitly.

    Every mutation marks what it touched, so `take_changes()` can hand a store exactly what
    changed. Write `balances` only through `fund()`: direct writes are not tracked.
    """

    def __init__(
        self, *, seed: int, block_time_s: float, blockhash_valid_blocks: int, start_time: float
    ) -> None:
        self._rng = random.Random(seed)
        self._seed = seed
        self._block_time = block_time_s
        self._valid_blocks = blockhash_valid_blocks
        self._t0 = start_time
        self._start_height = START_HEIGHT
        self._blockhashes: dict[str, int] = {}
        self._txs: dict[str, TxRecord] = {}
        self._pending: list[TxRecord] = []
        self._pools: dict[str, _PoolEntry] = {}
        self._by_pair: dict[tuple[str, str, str], tuple[str, bool]] = {}
        self._fair: dict[tuple[str, str], Decimal] = {}
        self.balances: dict[tuple[str, str], int] = {}
        self.adverse_move_bps = 0
        self._seed_pools()
        # What changed since the last take_changes(); a new chain is all new.
        self._meta_dirty = True
        self._dirty_txs: set[str] = set()
        self._dirty_pools: set[str] = set(self._pools)
        self._dirty_balances: set[tuple[str, str]] = set()
        self._dirty_blockhashes: set[str] = set()
        self._blockhash_floor: int | None = None  # forgotten below this since take_changes

    # -- set-up ----------------------------------------------------------------------------

    def _seed_pools(self) -> None:
        for x, y, reserve_x_ui, bin_step, x_per_bin_ui in PAIRS:
            fair = REFERENCE_USD[x] / REFERENCE_USD[y]  # y per x, UI units
            self._fair[(x, y)] = fair
            base_price = fair * Decimal(10) ** (DECIMALS[y] - DECIMALS[x])
            # Venues differ by a few percent, either way: either one can win.
            offsets = {v: Decimal(self._rng.uniform(-0.02, 0.02)).quantize(Decimal("1e-6"))
                       for v in VENUES}
            rx = reserve_x_ui * 10 ** DECIMALS[x]
            ry = int(Decimal(rx) * base_price * (1 + offsets["raydium"]))
            cpmm = pool_math.ConstantProductPool(
                pool_address("raydium", x, y), x, y, reserve_x=rx, reserve_y=ry, fee_bps=25
            )
            x_per_bin = x_per_bin_ui * 10 ** DECIMALS[x]
            dlmm_price = base_price * (1 + offsets["meteora"])
            dlmm = pool_math.DlmmPool.around_price(
                pool_address("meteora", x, y), x, y, bin_step=bin_step, price=dlmm_price,
                x_per_bin=x_per_bin, y_per_bin=int(Decimal(x_per_bin) * dlmm_price),
                bins_each_side=120,
            )
            for venue, pool in (("raydium", cpmm), ("meteora", dlmm)):
                self._pools[pool.address] = _PoolEntry(venue, pool, offsets[venue])
                self._by_pair[(venue, x, y)] = (pool.address, True)
                self._by_pair[(venue, y, x)] = (pool.address, False)

    def fund(self, owner: str, amounts: dict[str, int]) -> None:
        """Credit `owner` with base-unit amounts per token symbol."""
        for symbol, amount in amounts.items():
            key = (owner, symbol)
            self.balances[key] = self.balances.get(key, 0) + amount
            self._dirty_balances.add(key)

    # -- blocks ----------------------------------------------------------------------------

    def block_height(self, now: float) -> int:
        return _height_at(now, self._t0, self._start_height, self._block_time)

    def latest_blockhash(self, now: float) -> tuple[str, int]:
        """Return the current blockhash and the last block height at which it is valid."""
        height = self.block_height(now)
        blockhash = str(Hash.hash(f"{self._seed}:{height}".encode()))
        if self._blockhashes.get(blockhash) != height:
            self._blockhashes[blockhash] = height
            self._dirty_blockhashes.add(blockhash)
            if len(self._blockhashes) > 4 * self._valid_blocks:
                self._forget_blockhashes_below(height - 2 * self._valid_blocks)
        return blockhash, height + self._valid_blocks

    def _forget_blockhashes_below(self, floor: int) -> None:
        """Forget blockhashes issued below `floor`: expired long ago, a send with one is refused
        as unknown instead of expired (both BlockhashExpired). Keeps a long run's memory flat."""
        self._blockhashes = {b: h for b, h in self._blockhashes.items() if h >= floor}
        self._dirty_blockhashes &= self._blockhashes.keys()
        self._blockhash_floor = floor

    # -- venues ----------------------------------------------------------------------------

    def find_pool(self, venue: str, token_in: str, token_out: str) -> tuple[pool_math.Pool, bool]:
        """Return the venue's pool for the pair and whether the swap is x to y."""
        try:
            address, x_to_y = self._by_pair[(venue, token_in, token_out)]
        except KeyError:
            raise NoRoute(f"{venue} has no {token_in}/{token_out} pool", venue=venue) from None
        return self._pools[address].pool, x_to_y

    def quote(
        self, venue: str, token_in: str, token_out: str, amount_in: int, now: float
    ) -> PoolQuote:
        """Return what the venue's pool would pay for the swap; change nothing."""
        pool, x_to_y = self.find_pool(venue, token_in, token_out)
        try:
            result = pool.quote(amount_in, x_to_y, now)
        except pool_math.InsufficientLiquidity:
            raise InsufficientLiquidity(
                f"{venue} pool {token_in}/{token_out} cannot fill {amount_in}", venue=venue
            ) from None
        return PoolQuote(pool=pool.address, x_to_y=x_to_y, amount_out=result.amount_out,
                         fee=result.fee, fee_bps=pool.fee_bps(now),
                         price_impact_bps=result.price_impact_bps)

    def spot_price(self, venue: str, token_x: str, token_y: str) -> Decimal:
        pool, _ = self.find_pool(venue, token_x, token_y)
        return pool.spot_price()

    # -- transactions ----------------------------------------------------------------------

    def send_transaction(self, tx_bytes: bytes, now: float, land_delay_s: float) -> str:
        """Accept a signed transaction; it lands after `land_delay_s` (or at once if 0)."""
        try:
            tx = Transaction.from_bytes(tx_bytes)
            tx.verify()
            swap = decode_swap(tx)
        except Exception as exc:  # solders raises several types for malformed input
            raise InvalidInput(f"transaction rejected: {exc}") from None
        signature = str(tx.signatures[0])
        if signature in self._txs:
            return signature  # already seen: a duplicate send executes once
        valid_height = self._blockhashes.get(str(tx.message.recent_blockhash))
        if valid_height is None:
            raise BlockhashExpired("blockhash not found")
        last_valid = valid_height + self._valid_blocks
        if self.block_height(now) > last_valid:
            raise BlockhashExpired("blockhash expired before the transaction was sent")
        record = TxRecord(
            signature, swap.owner, swap.pool, swap.amount_in, swap.min_amount_out, swap.x_to_y,
            last_valid, land_at=now + max(0.0, land_delay_s), sent_at=now,
        )
        self._txs[signature] = record
        self._pending.append(record)
        self._dirty_txs.add(signature)
        if land_delay_s <= 0:
            self.process(now)
        return signature

    def process(self, now: float) -> int:
        """Land every pending transaction due by `now`, in landing order; return how many."""
        due = sorted((t for t in self._pending if t.land_at <= now), key=lambda t: t.land_at)
        if not due:
            return 0
        self._pending = [t for t in self._pending if t.land_at > now]
        for tx in due:
            self._dirty_txs.add(tx.signature)  # every due transaction lands or drops
            height = self.block_height(tx.land_at)
            if height > tx.last_valid_block_height:
                tx.state = "dropped"  # never lands; status stays unknown
                continue
            self._execute(tx, height, now)
        return len(due)

    def _execute(self, tx: TxRecord, height: int, now: float) -> None:
        entry = self._pools.get(tx.pool)
        tx.block_height = height
        if entry is None:
            self._fail(tx, "unknown pool account", "invalid_input")
            return
        pool = entry.pool
        token_in, token_out = (
            (pool.token_x, pool.token_y) if tx.x_to_y else (pool.token_y, pool.token_x)
        )
        if self.balances.get((tx.owner, token_in), 0) < tx.amount_in:
            self._fail(tx, "insufficient funds", "insufficient_funds")
            return
        if self.adverse_move_bps:
            # A front-runner trades the same way first, moving the price against the user.
            self._move_price(pool, -self.adverse_move_bps if tx.x_to_y else self.adverse_move_bps,
                             now)
        try:
            expected = pool.quote(tx.amount_in, tx.x_to_y, now)
        except pool_math.InsufficientLiquidity:
            self._fail(tx, "insufficient liquidity", "insufficient_liquidity")
            return
        if expected.amount_out < tx.min_amount_out:
            self._fail(
                tx,
                f"slippage exceeded: pool pays {expected.amount_out},"
                f" minimum {tx.min_amount_out}",
                "slippage_exceeded",
            )
            return
        result = pool.swap(tx.amount_in, tx.x_to_y, now)
        self._dirty_pools.add(pool.address)
        key_in, key_out = (tx.owner, token_in), (tx.owner, token_out)
        self.balances[key_in] -= result.amount_in
        self.balances[key_out] = self.balances.get(key_out, 0) + result.amount_out
        self._dirty_balances.update((key_in, key_out))
        tx.state, tx.amount_out = "confirmed", result.amount_out

    def _fail(self, tx: TxRecord, error: str, code: str) -> None:
        tx.state, tx.error, tx.error_code = "failed", error, code
        self._dirty_txs.add(tx.signature)

    def signature_statuses(self, signatures: list[str], now: float) -> list[TxStatus | None]:
        """Return each signature's landed status, or None if the chain has no record of it."""
        self.process(now)
        out: list[TxStatus | None] = []
        for sig in signatures:
            tx = self._txs.get(sig)
            if tx is None or tx.state in ("pending", "dropped"):
                out.append(None)
            else:
                out.append(TxStatus(sig, tx.state == "confirmed", tx.block_height,
                                    tx.amount_out, tx.error, tx.error_code))
        return out

    def executed_swaps(self, signatures: list[str]) -> int:
        """Return how many of `signatures` executed a swap (test and benchmark accounting)."""
        return sum(1 for s in signatures if (t := self._txs.get(s)) and t.state == "confirmed")

    # -- market ----------------------------------------------------------------------------

    def drift(self, now: float, sigma_bps: Decimal) -> None:
        """Move every pair's fair price by a random step and pull each pool toward it."""
        self._meta_dirty = True  # the fair prices and the random state move
        for (x, y), fair in list(self._fair.items()):
            step = Decimal(self._rng.gauss(0.0, float(sigma_bps))) / 10_000
            self._fair[(x, y)] = fair * (1 + step)
        for entry in self._pools.values():
            pool = entry.pool
            fair_ui = self._fair[(pool.token_x, pool.token_y)]
            target = fair_ui * Decimal(10) ** (DECIMALS[pool.token_y] - DECIMALS[pool.token_x])
            target *= 1 + entry.offset
            gap_bps = math.log(float(target / pool.spot_price())) * 10_000
            noise = self._rng.gauss(0.0, float(sigma_bps))
            move = max(-50.0, min(50.0, gap_bps * 0.5 + noise))
            if abs(move) >= 0.5:
                self._move_price(pool, round(move) or (1 if move > 0 else -1), now)

    def move_pair(self, token_x: str, token_y: str, bps: int, now: float) -> None:
        """Move the price of `token_x` in `token_y` by about `bps` on every venue, and the
        pair's fair price with it (so drift does not pull it back): a scripted price path."""
        key = (token_x, token_y) if (token_x, token_y) in self._fair else (token_y, token_x)
        if key not in self._fair:
            raise NoRoute(f"no {token_x}/{token_y} pair")
        signed = bps if key == (token_x, token_y) else -bps
        self._meta_dirty = True
        self._fair[key] *= 1 + Decimal(signed) / 10_000
        for entry in self._pools.values():
            if (entry.pool.token_x, entry.pool.token_y) == key:
                self._move_price(entry.pool, signed, now)

    def _move_price(self, pool: pool_math.Pool, bps: int, now: float) -> None:
        """Trade against `pool` (as the market) until its price moved about `bps`."""
        x_to_y = bps < 0  # selling x lowers the price of x
        start = pool.spot_price()
        target = start * (1 + Decimal(bps) / 10_000)
        if isinstance(pool, pool_math.ConstantProductPool):
            self._trade(pool, _cpmm_trade_to(pool, target, x_to_y, now), x_to_y, now)
            return
        # DLMM: search the trade size (18 halvings: well within a bin's width); each trial
        # is a walk that changes nothing, so no copies of the pool are needed.
        assert isinstance(pool, pool_math.DlmmPool)  # noqa: S101 - the two kinds of pool
        lo, hi = 1, self._trade_ceiling(pool, x_to_y)
        best = 0
        for _ in range(18):
            if lo > hi:
                break
            mid = (lo + hi) // 2
            try:
                moved = pool.price_after(mid, x_to_y, now)
            except pool_math.InsufficientLiquidity:
                hi = mid - 1
                continue
            if (moved > target) if x_to_y else (moved < target):
                best, lo = mid, mid + 1
            else:
                best, hi = mid, mid - 1
        self._trade(pool, best, x_to_y, now)

    def _trade(self, pool: pool_math.Pool, amount_in: int, x_to_y: bool, now: float) -> None:
        if amount_in <= 0:
            return
        try:
            pool.swap(amount_in, x_to_y, now)
        except pool_math.InsufficientLiquidity:
            log.debug("market move skipped on %s", pool.address)
        else:
            self._dirty_pools.add(pool.address)

    # -- persistence -----------------------------------------------------------------------

    def has_changes(self) -> bool:
        """Return True when something changed since the last `take_changes()`."""
        return bool(self._meta_dirty or self._dirty_txs or self._dirty_pools
                    or self._dirty_balances or self._dirty_blockhashes
                    or self._blockhash_floor is not None)

    def changed(self, signatures: Iterable[str] = (), blockhashes: Iterable[str] = ()) -> bool:
        """Return True if any of these changed since the last `take_changes()`."""
        return (any(s in self._dirty_txs for s in signatures)
                or any(b in self._dirty_blockhashes for b in blockhashes))

    def take_changes(self) -> ChainChanges:
        """Return everything changed since the last call (a new chain: everything); forget it.

        Pending transactions are included with their land_at, so a restored chain lands (or
        drops) them as this one would have.
        """
        changes = ChainChanges(
            meta=self._meta() if self._meta_dirty else None,
            transactions={s: self._txs[s].copy() for s in self._dirty_txs},
            pools={a: _dump_pool(self._pools[a].pool) for a in self._dirty_pools},
            balances={k: self.balances[k] for k in self._dirty_balances},
            blockhashes={b: self._blockhashes[b] for b in self._dirty_blockhashes},
            blockhash_floor=self._blockhash_floor,
        )
        self._clear_dirty()
        return changes

    def snapshot(self) -> ChainSnapshot:
        """Return the whole state of the chain; leave the changes to take untouched."""
        return ChainSnapshot(
            meta=self._meta(),
            transactions={s: t.copy() for s, t in self._txs.items()},
            pools={a: _dump_pool(e.pool) for a, e in self._pools.items()},
            balances=dict(self.balances),
            blockhashes=dict(self._blockhashes),
        )

    def next_land_at(self) -> float | None:
        """Return when the earliest pending transaction lands, or None if none is pending."""
        return min((t.land_at for t in self._pending), default=None)

    @classmethod
    def restore(
        cls,
        snapshot: ChainSnapshot,
        *,
        block_time_s: float,
        blockhash_valid_blocks: int,
        now: float | None = None,
    ) -> SimChain:
        """Rebuild a chain from a full snapshot; block heights continue from it.

        The seed re-creates the venues' fixed offsets; everything that moves comes from the
        snapshot. Pending transactions are pending again. When `block_time_s` differs from
        the stored one, pass `now`: the clock is re-based there so heights never jump.
        New parameters apply from now on; the next take_changes() carries the meta only
        (plus any pool the snapshot lacks), since everything else is already stored.
        """
        meta = snapshot.meta
        chain = cls(seed=meta.seed, block_time_s=block_time_s,
                    blockhash_valid_blocks=blockhash_valid_blocks, start_time=meta.start_time)
        chain._start_height = meta.start_height
        if block_time_s != meta.block_time_s:
            if now is None:
                raise ValueError(
                    f"block time changed from {meta.block_time_s}s to {block_time_s}s:"
                    " pass now= to re-base the block height there"
                )
            height = _height_at(now, meta.start_time, meta.start_height, meta.block_time_s)
            chain._t0, chain._start_height = now, height
        version, internal, gauss_next = json.loads(meta.rng_state)
        chain._rng.setstate((version, tuple(internal), gauss_next))
        for key, price in meta.fair_prices.items():
            x, y = key.split("/", 1)
            chain._fair[(x, y)] = Decimal(price)
        fresh = set(chain._pools)
        for address, state in snapshot.pools.items():
            entry = chain._pools.get(address)
            if entry is None:
                log.warning("stored pool %s is not one this chain has; ignored", address)
                continue
            entry.pool = _load_pool(state, address)
            fresh.discard(address)
        chain.balances = dict(snapshot.balances)
        chain._blockhashes = dict(snapshot.blockhashes)
        chain._txs = {s: r.copy() for s, r in snapshot.transactions.items()}
        chain._pending = [t for t in chain._txs.values() if t.state == "pending"]
        chain._clear_dirty()
        chain._meta_dirty = True
        chain._dirty_pools = fresh  # pools added to the code since the snapshot was stored
        return chain

    def _meta(self) -> ChainMeta:
        version, internal, gauss_next = self._rng.getstate()
        return ChainMeta(
            seed=self._seed,
            start_time=self._t0,
            start_height=self._start_height,
            block_time_s=self._block_time,
            valid_blocks=self._valid_blocks,
            fair_prices={_pair_key(x, y): str(p) for (x, y), p in self._fair.items()},
            rng_state=json.dumps([version, list(internal), gauss_next]),
        )

    def _clear_dirty(self) -> None:
        self._meta_dirty = False
        self._dirty_txs = set()
        self._dirty_pools = set()
        self._dirty_balances = set()
        self._dirty_blockhashes = set()
        self._blockhash_floor = None

    @staticmethod
    def _trade_ceiling(pool: pool_math.Pool, x_to_y: bool) -> int:
        reserve_x = getattr(pool, "reserve_x", None)
        if reserve_x is not None:
            return int(reserve_x if x_to_y else pool.reserve_y)  # type: ignore[attr-defined]
        bins = pool.bins  # type: ignore[attr-defined]
        side = sum(b[1] for b in bins.values()) if x_to_y else sum(b[0] for b in bins.values())
        price = pool.spot_price()
        return int(Decimal(side) / price) if x_to_y else int(Decimal(side) * price)


def _height_at(now: float, t0: float, start_height: int, block_time_s: float) -> int:
    if block_time_s <= 0:
        return start_height
    return start_height + int((now - t0) / block_time_s)


def _dump_pool(pool: pool_math.Pool) -> bytes:
    return pickle.dumps(pool, protocol=_PICKLE_PROTOCOL)


def _load_pool(state: bytes, address: str) -> pool_math.Pool:
    # Only bytes this module wrote (pools pickled by _dump_pool into our own database) are
    # ever loaded here, never input from a client or the network.
    pool = pickle.loads(state)  # noqa: S301
    if not isinstance(pool, pool_math.Pool) or pool.address != address:
        raise ValueError(f"stored state of pool {address} is not that pool")
    return pool


def dev_wallet(secret: str | None) -> Keypair:
    """Return the wallet from a base58 secret, or a fresh one for the simulated set-up."""
    return Keypair.from_base58_string(secret) if secret else Keypair()


def _cpmm_trade_to(pool: pool_math.ConstantProductPool, target: Decimal, x_to_y: bool,
                   now: float) -> int:
    """Return the input that moves a constant-product pool's price (y per x) to `target`."""
    k = Decimal(pool.reserve_x) * Decimal(pool.reserve_y)
    if x_to_y:  # x' = sqrt(k / p'): sell x until the price falls to the target
        net = (k / target).sqrt() - Decimal(pool.reserve_x)
    else:  # y' = sqrt(k * p'): sell y until the price rises to the target
        net = (k * target).sqrt() - Decimal(pool.reserve_y)
    fee = pool.fee_bps(now)
    return int(net * 10_000 / (10_000 - fee)) if net > 0 else 0
