"""`dexec localnet`: the local Solana cluster as a process of its own.

A Ledger seeded with the default tokens and one pool per venue and pair, a journal that lets
it survive its own restart (like a real cluster, it outlives the engine), the prices' random
walk, and the JSON-RPC server. Two endpoints beside JSON-RPC serve development only: the pool
directory (`GET /localnet/pools`: what the venues' pool APIs answer on a live network) and a
token faucet (`POST /localnet/fund`, like requestAirdrop for SPL tokens).

The journal (`journal.jsonl` in the data folder) records what changes the ledger from outside
its genesis: committed transactions, airdrops, faucet grants and price moves, each with the
time it happened. At start the genesis is rebuilt from the seed and the journal replayed with
the clock pinned to each entry's time, so slots, balances and signatures come back as they were.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from solders.pubkey import Pubkey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.tokens import DEFAULT_TOKENS
from gateways.localnet.ledger import Ledger
from gateways.localnet.server import Faults, RpcServer
from gateways.localnet.venues import LocalVenueApis
from gateways.simulated.chain import PAIRS, REFERENCE_USD
from gateways.solana import cpmm, dlmm

log = logging.getLogger(__name__)

MINTS = {t.symbol: Pubkey.from_string(t.mint) for t in DEFAULT_TOKENS}
DECIMALS = {t.symbol: t.decimals for t in DEFAULT_TOKENS}
JOURNAL = "journal.jsonl"
MAX_FAUCET_UI = 1_000_000  # per token and request
REVERSION_S = 600.0  # a pool's price is pulled back to its seeded one over about this long
MAX_BINS_A_STEP = 10  # a DLMM pair moves at most this many bins a price step


@dataclass(frozen=True)
class Profile:
    slot_s: float
    delay_ms: int


PROFILES = {"zero": Profile(0.05, 0), "realistic": Profile(0.4, 25)}


@dataclass(frozen=True)
class ListedPool:
    venue: str
    program: str
    address: str
    mint_x: str
    mint_y: str
    lookup_table: str = ""  # the pool's address lookup table (V0 transactions), if any


class Localnet:
    """The local cluster: ledger, genesis, journal, price walk and HTTP app."""

    def __init__(self, data_dir: Path | None, *, profile: str = "realistic", seed: int = 7,
                 drift_bps: float = 5.0, drift_interval_s: float = 1.0,
                 faults: Faults | None = None, test_hooks: bool = False) -> None:
        self.data_dir = data_dir
        self.profile = PROFILES[profile]
        self._seed = seed
        self._drift_bps = drift_bps
        self._drift_interval = drift_interval_s
        self._pinned: float | None = None  # the clock during replay
        self._journal_file: Any = None
        self.pools: list[ListedPool] = []
        self._anchors: dict[str, float] = {}  # each pool's seeded log price
        self._dlmm_walk: dict[str, float] = {}  # each DLMM pair's walk, between its bins
        self.ledger = self._genesis(time.time())
        faults = faults or Faults(delay_ms=self.profile.delay_ms)
        self.server = RpcServer(self.ledger, faults=faults, test_hooks=test_hooks)
        self.venues = LocalVenueApis(lambda: self.ledger, lambda: self.pools,
                                     delay_ms=self.profile.delay_ms)
        self._test_hooks = test_hooks
        self._rng = random.Random(seed)  # noqa: S311 (a price walk, not a secret)

    def _now(self) -> float:
        return self._pinned if self._pinned is not None else time.time()

    # -- genesis and journal -------------------------------------------------------------

    def _genesis(self, t0: float, slot_s: float | None = None) -> Ledger:
        ledger = Ledger(clock=self._now, slot_s=slot_s or self.profile.slot_s,
                        seed=f"localnet-{self._seed}", t0=t0)
        for symbol, mint in MINTS.items():
            ledger.create_mint(mint, DECIMALS[symbol])
        rng = random.Random(self._seed)  # noqa: S311 (seeded pools, not secrets)
        self.pools = []
        self._anchors = {}
        for x, y, reserve_x_ui, bin_step, x_per_bin_ui in PAIRS:
            fair = REFERENCE_USD[x] / REFERENCE_USD[y]  # y per x, UI units
            # The venues start a few percent apart, either way: either one can win.
            offsets = [Decimal(rng.uniform(-0.02, 0.02)).quantize(Decimal("1e-6"))
                       for _ in range(2)]
            reserve_x = reserve_x_ui * 10 ** DECIMALS[x]
            reserve_y = int(Decimal(reserve_x_ui) * fair * (1 + offsets[0]) * 10 ** DECIMALS[y])
            address = ledger.add_cpmm_pool(MINTS[x], MINTS[y], reserve_x, reserve_y)
            state = ledger.pool_state(address)
            # The pool's accounts in a lookup table, as Raydium's V0 transactions use them.
            table = ledger.add_lookup_table(
                [cpmm.authority()[0], state.amm_config, address, state.token_0_vault,
                 state.token_1_vault, state.token_0_mint, state.token_1_mint,
                 state.observation_key, state.token_program], f"raydium-{str(address)[:24]}")
            self.pools.append(ListedPool("raydium", str(cpmm.PROGRAM_ID), str(address),
                                         str(MINTS[x]), str(MINTS[y]), str(table)))
            price = fair * (1 + offsets[1])
            seeded = dlmm.seed_pool(
                MINTS[x], MINTS[y], decimals_x=DECIMALS[x], decimals_y=DECIMALS[y],
                price=price, bin_step=bin_step, x_per_bin=x_per_bin_ui * 10 ** DECIMALS[x],
                y_per_bin=int(x_per_bin_ui * price * 10 ** DECIMALS[y]), bins_each_side=120,
                now_ts=int(t0))
            ledger.add_dlmm_pool(seeded)
            self.pools.append(ListedPool("meteora", str(dlmm.PROGRAM_ID), str(seeded.address),
                                         str(MINTS[x]), str(MINTS[y])))
        for listed in self.pools:  # where each pool's walk reverts to
            self._anchors[listed.address] = self._log_price(ledger, listed)
        return ledger

    @staticmethod
    def _log_price(ledger: Ledger, listed: ListedPool) -> float:
        pool = Pubkey.from_string(listed.address)
        if listed.venue == "raydium":
            state = ledger.pool_state(pool)
            return math.log((ledger.token_amount(state.token_1_vault) or 1)
                            / (ledger.token_amount(state.token_0_vault) or 1))
        pair, _ = ledger.dlmm_state(pool)
        return pair.active_id * math.log1p(pair.bin_step / 10_000)

    def open(self) -> int:
        """Replay the journal (if any) and keep writing it; return the entries replayed."""
        if self.data_dir is None:
            return 0
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / JOURNAL
        entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
            if path.exists() else []
        if entries and entries[0].get("op") == "genesis" and entries[0].get("seed") == self._seed:
            # The slot length of the chain as it was made, whatever the profile now: slots,
            # and so every recorded blockhash, must come back the same.
            genesis = entries[0]
            self.ledger = self._genesis(float(genesis["t0"]), genesis.get("slot_s"))
            self.server.ledger = self.ledger
            lost = 0
            for entry in entries[1:]:
                self._pinned = float(entry["t"])
                lost += not self._apply(entry)
            self._pinned = None
            if lost:
                log.error("%d journaled transactions did not execute again on replay: the"
                          " local cluster's state differs from before its restart", lost)
        else:
            entries = []
            path.write_text(json.dumps({"op": "genesis", "seed": self._seed,
                                        "t0": self.ledger.t0,
                                        "slot_s": self.profile.slot_s}) + "\n")
        self._journal_file = path.open("a", buffering=1)
        self.ledger.journal = self._record
        return max(len(entries) - 1, 0)

    def close(self) -> None:
        if self._journal_file is not None:
            self._journal_file.close()
            self._journal_file = None

    def _record(self, entry: dict[str, Any]) -> None:
        if self._journal_file is not None:
            self._journal_file.write(json.dumps({"t": self._now(), **entry}) + "\n")

    def _apply(self, entry: dict[str, Any]) -> bool:
        """Do a journal entry again; False if a transaction did not execute as it had."""
        op = entry["op"]
        if op == "tx":
            self.ledger.adverse_bps = int(entry.get("adverse", 0))
            try:
                signature = self.ledger.send(base64.b64decode(entry["b"]), skip_preflight=True)
            finally:
                self.ledger.adverse_bps = 0
            return signature in self.ledger.executed
        elif op == "airdrop":
            self.ledger.airdrop(Pubkey.from_string(entry["to"]), int(entry["lamports"]))
        elif op == "fund":
            self.ledger.fund_tokens(Pubkey.from_string(entry["to"]),
                                    Pubkey.from_string(entry["mint"]), int(entry["amount"]))
        elif op == "dlmm":
            self.ledger.fill_dlmm(Pubkey.from_string(entry["pool"]), int(entry["amount"]),
                                  bool(entry["for_y"]))
        elif op == "reserves":
            self.ledger.set_cpmm_reserves(Pubkey.from_string(entry["pool"]), int(entry["r0"]),
                                          int(entry["r1"]))
        return True

    # -- operations from outside the chain -----------------------------------------------

    def airdrop(self, to: Pubkey, lamports: int) -> str:
        signature = self.ledger.airdrop(to, lamports)
        self._record({"op": "airdrop", "to": str(to), "lamports": lamports})
        return signature

    def fund(self, to: Pubkey, mint: Pubkey, amount: int) -> None:
        self.ledger.fund_tokens(to, mint, amount)
        self._record({"op": "fund", "to": str(to), "mint": str(mint), "amount": amount})

    def drift(self) -> None:
        """Move every pool's price a step of a mean-reverting random walk, by the trade an
        arbitrageur would make: CPMM reserves keep their product; a DLMM pair's active bin
        moves by a real swap through its bins. Each pool reverts to its seeded price over
        `REVERSION_S`, so a long-running cluster stays inside the DLMM pairs' bins."""
        sigma = self._drift_bps / 10_000
        keep = min(self._drift_interval / REVERSION_S, 1.0)
        for listed in self.pools:
            pool = Pubkey.from_string(listed.address)
            anchor = self._anchors[listed.address]
            if listed.venue == "raydium":
                state = self.ledger.pool_state(pool)
                r0 = self.ledger.token_amount(state.token_0_vault) or 0
                r1 = self.ledger.token_amount(state.token_1_vault) or 0
                now = math.log(r1 / r0)
                step = math.exp(self._rng.gauss(0.0, sigma) - keep * (now - anchor))
                new0, new1 = int(r0 / math.sqrt(step)), int(r1 * math.sqrt(step))
                self.ledger.set_cpmm_reserves(pool, new0, new1)
                self._record({"op": "reserves", "pool": listed.address, "r0": new0, "r1": new1})
            else:
                pair, _ = self.ledger.dlmm_state(pool)
                bin_log = math.log1p(pair.bin_step / 10_000)
                # The walk is continuous; the pair follows it in whole bins.
                now = self._dlmm_walk.get(listed.address, pair.active_id * bin_log)
                now += self._rng.gauss(0.0, sigma) - keep * (now - anchor)
                self._dlmm_walk[listed.address] = now
                target = round(now / bin_log)
                step = max(-MAX_BINS_A_STEP, min(MAX_BINS_A_STEP, target - pair.active_id))
                self.ledger.move_dlmm_to(pool, pair.active_id + step)  # journals itself

    async def drift_forever(self) -> None:
        if self._drift_bps <= 0:
            return
        while True:
            await asyncio.sleep(self._drift_interval)
            self.drift()

    # -- HTTP ----------------------------------------------------------------------------

    def app(self) -> Starlette:
        app = self.server.app()
        app.router.routes += [
            Route("/localnet/pools", self._pools, methods=["GET"]),
            Route("/localnet/fund", self._fund, methods=["POST"]),
            *self.venues.routes(),
        ]
        if self._test_hooks:
            app.router.routes.append(Route("/localnet/venue-faults", self._venue_faults,
                                           methods=["POST"]))
        self.server.on_airdrop = self.airdrop  # requestAirdrop goes through the journal too
        return app

    async def _venue_faults(self, request: Request) -> Response:
        """Test mode: {"venue": "raydium", "http_503_rate": 1.0, "tamper": "drain", ...}."""
        try:
            changes = dict(json.loads(await request.body()))
            faults = self.venues.set_faults(str(changes.pop("venue")), changes)
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"bad venue faults: {exc}"}, status_code=400)
        return JSONResponse(faults.__dict__)

    async def _pools(self, _: Request) -> Response:
        return JSONResponse({"pools": [listed.__dict__ for listed in self.pools]})

    async def _fund(self, request: Request) -> Response:
        """Faucet: {"owner": pubkey, "tokens": {"USDC": "1000", ...}} (UI amounts)."""
        try:
            body = json.loads(await request.body())
            owner = Pubkey.from_string(str(body["owner"]))
            grants = {str(k): Decimal(str(v)) for k, v in dict(body["tokens"]).items()}
            if not all(s in MINTS and 0 < a <= MAX_FAUCET_UI for s, a in grants.items()):
                raise ValueError("unknown token or amount out of range")
        except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
            return JSONResponse({"error": f"bad faucet request: {exc}"}, status_code=400)
        for symbol, amount in grants.items():
            self.fund(owner, MINTS[symbol], int(amount * 10 ** DECIMALS[symbol]))
        return JSONResponse({"owner": str(owner), "funded": {k: str(v)
                                                             for k, v in grants.items()}})


async def serve(localnet: Localnet, host: str, port: int) -> None:
    """Run the cluster until cancelled (the `dexec localnet` process)."""
    import uvicorn

    replayed = localnet.open()
    log.info("local Solana cluster on http://%s:%d (%d journal entries replayed, slot %d)",
             host, port, replayed, localnet.ledger.slot())
    server = uvicorn.Server(uvicorn.Config(localnet.app(), host=host, port=port,
                                           log_level="warning", lifespan="off"))
    drift = asyncio.get_running_loop().create_task(localnet.drift_forever())
    try:
        await server.serve()
    finally:
        drift.cancel()
        localnet.close()
