"""The server side of the simulated set-up: the venues' API servers and the chain behind them.

One `ChainServer` plays what a live set-up reaches over the network: each venue's servers
(their latency and injected failures, `VenueBehaviour`) and the chain itself (`SimChain`),
kept durable through a `ChainStore` (`ChainJournal` saves every change before it is
reported). It is plain Python; the `SimulatedChain` actor is its Ray shell.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from core.errors import DexecError, VenueTimeout, VenueUnavailable
from core.quotes import TxStatus
from core.retry import retry_until_done
from core.tokens import DEFAULT_TOKENS
from gateways.simulated.chain import ChainRows, ChainSnapshot, SimChain
from gateways.simulated.journal import ChainJournal
from gateways.simulated.schema import PoolQuote

log = logging.getLogger(__name__)

FUNDED_SYMBOLS = tuple(t.symbol for t in DEFAULT_TOKENS)
DEV_FUNDING = 10**15  # base units of each token given to the dev wallet on a fresh chain


@dataclass
class Faults:
    """Failure injection for one venue: rates from settings, counts from tests."""

    down: bool = False
    fail_rate: float = 0.0
    timeout_rate: float = 0.0
    fail_next: int = 0  # the next N calls fail with a transient error

    def check(self, venue: str, rng: random.Random) -> None:
        if self.down:
            raise VenueUnavailable(f"{venue} is down", venue=venue)
        if self.fail_next > 0:
            self.fail_next -= 1
            raise VenueUnavailable(f"{venue} answered 503 (injected)", venue=venue)
        if self.fail_rate and rng.random() < self.fail_rate:
            raise VenueUnavailable(f"{venue} answered 503 (injected)", venue=venue)
        if self.timeout_rate and rng.random() < self.timeout_rate:
            raise VenueTimeout(f"{venue} timed out (injected)", venue=venue)


class VenueBehaviour:
    """How one simulated venue's servers behave: their latency and their failures.

    It lives with the chain (the server side), so every worker and replica that calls the
    venue sees the same behaviour, and a test that injects one failure gets one.
    """

    def __init__(self, name: str, *, quote_latency_ms: tuple[int, int],
                 swap_latency_ms: tuple[int, int], faults: Faults, seed: int) -> None:
        self.name = name
        self.quote_latency_ms = quote_latency_ms
        self.swap_latency_ms = swap_latency_ms
        self.faults = faults
        self._rng = random.Random(f"{seed}:{name}")

    def _draw(self, bounds: tuple[int, int]) -> float:
        low, high = bounds
        return self._rng.uniform(low, high) / 1000 if high > 0 else 0.0

    def quote_delay_s(self) -> float:
        """Seconds the venue takes to answer a quote."""
        return self._draw(self.quote_latency_ms)

    def landing_delay_s(self) -> float:
        """Seconds from accepting a swap until it lands."""
        return self._draw(self.swap_latency_ms)

    def check(self) -> None:
        """Raise the injected failure of this call, if any."""
        self.faults.check(self.name, self._rng)


class ChainStore(Protocol):
    """Where the chain's state is kept (storage.simchain.SimChainStore in the default set-up)."""

    async def open(self) -> None: ...

    async def load(self) -> Mapping[str, list[dict[str, Any]]] | None: ...

    async def save(self, changes: ChainRows) -> None: ...


@dataclass(frozen=True)
class ChainParameters:
    seed: int
    block_time_s: float
    blockhash_valid_blocks: int
    drift_interval_s: float  # 0: prices never drift
    drift_bps: Decimal
    adverse_move_bps: int = 0


class ChainServer:
    """Answer the venues' quote and send calls and the chain's RPC, durably."""

    def __init__(self, store: ChainStore, venues: Iterable[VenueBehaviour],
                 params: ChainParameters, *, wallet: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._venues = {v.name: v for v in venues}
        self._params = params
        self._wallet = wallet
        self._clock = clock
        self._chain: SimChain | None = None
        self._journal: ChainJournal | None = None
        self._started: asyncio.Task[None] | None = None
        self._landing_slots: set[float] = set()
        self._tasks: set[asyncio.Future[None]] = set()

    def start(self) -> None:
        """Load (or create) the chain in the background; every call waits for it."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        rows = await retry_until_done(self._load, what="loading the simulated chain")
        p, now = self._params, self._clock()
        if rows is None:
            chain = SimChain(seed=p.seed, block_time_s=p.block_time_s,
                             blockhash_valid_blocks=p.blockhash_valid_blocks, start_time=now)
            chain.fund(self._wallet, dict.fromkeys(FUNDED_SYMBOLS, DEV_FUNDING))
        else:
            chain = SimChain.restore(ChainSnapshot.from_rows(rows), block_time_s=p.block_time_s,
                                     blockhash_valid_blocks=p.blockhash_valid_blocks, now=now)
            log.info("simulated chain restored from the database")
        chain.adverse_move_bps = p.adverse_move_bps
        self._chain = chain
        self._journal = ChainJournal(chain, self._store.save)
        try:
            await self._journal.persist()
        except DexecError as exc:  # kept unsaved; the next change saves it too
            log.warning("could not save the chain's start yet: %s", exc)
        due = chain.next_land_at()
        if due is not None:
            self._land_at(due)
        if p.drift_interval_s > 0:
            self._spawn(self._drift_loop())

    async def _load(self) -> Mapping[str, list[dict[str, Any]]] | None:
        await self._store.open()
        return await self._store.load()

    async def ready(self) -> SimChain:
        """Return the chain once it is loaded."""
        self.start()
        assert self._started is not None  # noqa: S101 - set by start
        await asyncio.shield(self._started)
        assert self._chain is not None  # noqa: S101 - set by _start
        return self._chain

    @property
    def _saves(self) -> ChainJournal:
        assert self._journal is not None  # noqa: S101 - set by _start
        return self._journal

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _land_at(self, when: float) -> None:
        # One timer per 10 ms slot: landing scans the pending transactions, so thousands
        # of sends a second must not mean thousands of scans.
        slot = math.ceil(when * 100) / 100
        if slot in self._landing_slots:
            return
        self._landing_slots.add(slot)

        def land() -> None:
            self._landing_slots.discard(slot)
            self._spawn(self._land())

        asyncio.get_running_loop().call_later(max(0.0, slot - self._clock()), land)

    async def _land(self) -> None:
        chain = await self.ready()
        if chain.process(self._clock()):
            try:
                await self._saves.persist()
            except Exception as exc:
                log.warning("could not save landed transactions yet: %s", exc)

    async def _drift_loop(self) -> None:
        while True:
            await asyncio.sleep(self._params.drift_interval_s)
            chain = await self.ready()
            chain.drift(self._clock(), self._params.drift_bps)
            try:
                await self._saves.persist()
            except Exception as exc:
                log.warning("could not save the market's drift yet: %s", exc)

    def _venue(self, venue: str) -> VenueBehaviour:
        behaviour = self._venues.get(venue)
        if behaviour is None:
            raise VenueUnavailable(f"no venue named {venue}", venue=venue)
        return behaviour

    # -- the venues' API servers -------------------------------------------------------------

    def quote_delays(self, venues: Sequence[str]) -> list[float]:
        """Return how long each venue takes to answer a quote (an unknown one: no time)."""
        return [self._venues[v].quote_delay_s() if v in self._venues else 0.0 for v in venues]

    async def quote(self, venue: str, token_in: str, token_out: str, amount_in: int,
                    delay_s: float = 0.0) -> PoolQuote:
        """Answer a quote after the venue's latency (or with its injected failure)."""
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        self._venue(venue).check()
        chain = await self.ready()
        return chain.quote(venue, token_in, token_out, amount_in, self._clock())

    async def send_many(self, sends: Sequence[tuple[str, bytes]]) -> list[str | DexecError]:
        """Accept each (venue, signed bytes); answer once every accepted one is durable.

        A swap lands after its venue's swap latency; a failure injected for the venue
        refuses the send before the chain sees it.
        """
        chain = await self.ready()
        now = self._clock()
        answers: list[str | DexecError] = []
        for venue, tx_bytes in sends:
            try:
                behaviour = self._venue(venue)
                behaviour.check()
                land_delay_s = behaviour.landing_delay_s()
                answers.append(chain.send_transaction(tx_bytes, now, land_delay_s))
            except DexecError as exc:
                answers.append(exc)
                continue
            if land_delay_s > 0:
                self._land_at(now + land_delay_s)
        # Accepted means durable, landed or not.
        await self._saves.persist_unless_durable(a for a in answers if isinstance(a, str))
        return answers

    # -- the chain's RPC --------------------------------------------------------------------

    async def latest_blockhash(self) -> tuple[str, int]:
        answer = (await self.ready()).latest_blockhash(self._clock())
        # A sender must find it again after a restart.
        await self._saves.persist_unless_durable(blockhashes=[answer[0]])
        return answer

    async def signature_statuses(self, signatures: list[str]) -> list[TxStatus | None]:
        statuses = (await self.ready()).signature_statuses(signatures, self._clock())
        # Never report a landing that a crash could undo.
        await self._saves.persist_unless_durable(s.signature for s in statuses if s is not None)
        return statuses

    async def block_height(self) -> int:
        return (await self.ready()).block_height(self._clock())

    # -- operators' and tests' levers --------------------------------------------------------

    def set_faults(self, venue: str, **changes: Any) -> None:
        """Change a venue's failure injection at run time."""
        for key, value in changes.items():
            setattr(self._venue(venue).faults, key, value)

    def set_latency(self, quote_ms: tuple[int, int], swap_ms: tuple[int, int]) -> None:
        """Change every venue's simulated latency at run time."""
        for behaviour in self._venues.values():
            behaviour.quote_latency_ms, behaviour.swap_latency_ms = quote_ms, swap_ms

    async def set_adverse_move_bps(self, bps: int) -> None:
        (await self.ready()).adverse_move_bps = bps

    async def move_pair(self, token_x: str, token_y: str, bps: int) -> None:
        (await self.ready()).move_pair(token_x, token_y, bps, self._clock())
        await self._saves.persist()

    async def executed_swaps(self, signatures: list[str]) -> int:
        return (await self.ready()).executed_swaps(signatures)

    async def spot_price(self, venue: str, token_x: str, token_y: str) -> Decimal:
        return (await self.ready()).spot_price(venue, token_x, token_y)
