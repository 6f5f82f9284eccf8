"""A simulated Solana chain: pools, balances, block height, and transactions by signature.

It keeps the properties the engine's guarantees rest on: signatures are real ed25519
signatures over real transactions, a blockhash is valid for a bounded number of blocks, a
transaction that has not landed by then never will, the same signed transaction sent twice
executes once, and a failed swap changes nothing but still lands with its error.
"""

from __future__ import annotations

import copy
import logging
import math
import random
from dataclasses import dataclass, field
from decimal import Decimal

from solders.hash import Hash
from solders.keypair import Keypair
from solders.transaction import Transaction

from core.errors import (
    BlockhashExpired,
    InsufficientLiquidity,
    InvalidInput,
    NoRoute,
)
from core.quotes import TxStatus
from gateways.simulated import pools as pool_math
from gateways.simulated.program import decode_swap, pool_address

log = logging.getLogger(__name__)

# Reference prices in USD used to seed pools; the venues start a few percent apart.
REFERENCE_USD: dict[str, Decimal] = {
    "SOL": Decimal(150),
    "USDC": Decimal(1),
    "USDT": Decimal("1.0002"),
    "RAY": Decimal("2.1"),
}
DECIMALS: dict[str, int] = {"SOL": 9, "USDC": 6, "USDT": 6, "RAY": 6}
# (x, y, Raydium reserve of x in UI units, Meteora bin step, Meteora x per bin in UI units)
PAIRS: tuple[tuple[str, str, int, int, int], ...] = (
    ("SOL", "USDC", 200_000, 10, 400),
    ("SOL", "USDT", 60_000, 10, 150),
    ("USDC", "USDT", 20_000_000, 1, 100_000),
    ("RAY", "SOL", 3_000_000, 25, 6_000),
    ("RAY", "USDC", 2_000_000, 25, 5_000),
)
VENUES = ("raydium", "meteora")
TX_FEE_LAMPORTS = 5000


@dataclass
class _Tx:
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


@dataclass
class _PoolEntry:
    venue: str
    pool: pool_math.Pool
    offset: Decimal  # the venue's persistent premium over the pair's fair price
    history: list[Decimal] = field(default_factory=list)


class SimChain:
    """The state of the simulated chain; every method takes the current time explicitly."""

    def __init__(
        self, *, seed: int, block_time_s: float, blockhash_valid_blocks: int, start_time: float
    ) -> None:
        self._rng = random.Random(seed)
        self._seed = seed
        self._block_time = block_time_s
        self._valid_blocks = blockhash_valid_blocks
        self._t0 = start_time
        self._start_height = 250_000_000
        self._blockhashes: dict[str, int] = {}
        self._txs: dict[str, _Tx] = {}
        self._pending: list[_Tx] = []
        self._pools: dict[str, _PoolEntry] = {}
        self._by_pair: dict[tuple[str, str, str], tuple[str, bool]] = {}
        self._fair: dict[tuple[str, str], Decimal] = {}
        self.balances: dict[tuple[str, str], int] = {}
        self.adverse_move_bps = 0
        self._seed_pools()

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

    # -- blocks ----------------------------------------------------------------------------

    def block_height(self, now: float) -> int:
        if self._block_time <= 0:
            return self._start_height
        return self._start_height + int((now - self._t0) / self._block_time)

    def latest_blockhash(self, now: float) -> tuple[str, int]:
        """Return the current blockhash and the last block height at which it is valid."""
        height = self.block_height(now)
        blockhash = str(Hash.hash(f"{self._seed}:{height}".encode()))
        self._blockhashes[blockhash] = height
        return blockhash, height + self._valid_blocks

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
    ) -> tuple[str, bool, pool_math.SwapResult, Decimal]:
        """Return (pool address, x_to_y, result, fee bps) for a swap; change nothing."""
        pool, x_to_y = self.find_pool(venue, token_in, token_out)
        try:
            result = pool.quote(amount_in, x_to_y, now)
        except pool_math.InsufficientLiquidity:
            raise InsufficientLiquidity(
                f"{venue} pool {token_in}/{token_out} cannot fill {amount_in}", venue=venue
            ) from None
        return pool.address, x_to_y, result, pool.fee_bps(now)

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
        record = _Tx(
            signature, swap.owner, swap.pool, swap.amount_in, swap.min_amount_out, swap.x_to_y,
            last_valid, land_at=now + max(0.0, land_delay_s),
        )
        self._txs[signature] = record
        self._pending.append(record)
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
            height = self.block_height(tx.land_at)
            if height > tx.last_valid_block_height:
                tx.state = "dropped"  # never lands; status stays unknown
                continue
            self._execute(tx, height, now)
        return len(due)

    def _execute(self, tx: _Tx, height: int, now: float) -> None:
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
        self.balances[(tx.owner, token_in)] -= result.amount_in
        key_out = (tx.owner, token_out)
        self.balances[key_out] = self.balances.get(key_out, 0) + result.amount_out
        tx.state, tx.amount_out = "confirmed", result.amount_out

    @staticmethod
    def _fail(tx: _Tx, error: str, code: str) -> None:
        tx.state, tx.error, tx.error_code = "failed", error, code

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

    def _move_price(self, pool: pool_math.Pool, bps: int, now: float) -> None:
        """Trade against `pool` (as the market) until its price moved about `bps`."""
        x_to_y = bps < 0  # selling x lowers the price of x
        start = pool.spot_price()
        target = start * (1 + Decimal(bps) / 10_000)
        lo, hi = 1, self._trade_ceiling(pool, x_to_y)
        best = 0
        for _ in range(40):
            if lo > hi:
                break
            mid = (lo + hi) // 2
            trial = copy.deepcopy(pool)
            try:
                trial.swap(mid, x_to_y, now)
            except pool_math.InsufficientLiquidity:
                hi = mid - 1
                continue
            moved = trial.spot_price()
            if (moved > target) if x_to_y else (moved < target):
                best, lo = mid, mid + 1
            else:
                best, hi = mid, mid - 1
        if best:
            try:
                pool.swap(best, x_to_y, now)
            except pool_math.InsufficientLiquidity:
                log.debug("market move skipped on %s", pool.address)

    @staticmethod
    def _trade_ceiling(pool: pool_math.Pool, x_to_y: bool) -> int:
        reserve_x = getattr(pool, "reserve_x", None)
        if reserve_x is not None:
            return int(reserve_x if x_to_y else pool.reserve_y)  # type: ignore[attr-defined]
        bins = pool.bins  # type: ignore[attr-defined]
        side = sum(b[1] for b in bins.values()) if x_to_y else sum(b[0] for b in bins.values())
        price = pool.spot_price()
        return int(Decimal(side) / price) if x_to_y else int(Decimal(side) * price)


def dev_wallet(secret: str | None) -> Keypair:
    """Return the wallet from a base58 secret, or a fresh one for the simulated set-up."""
    return Keypair.from_base58_string(secret) if secret else Keypair()
