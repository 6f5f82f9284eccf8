"""The simulated chain's actor (a thin shell over ChainServer) and its client in each process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import ray

from actors.batching import Coalescer, as_completed, concatenated, each, shared
from actors.shell import (
    WiredHandle,
    WireHost,
    WireServed,
    database_url,
    hot,
    require_test_hooks,
    tune_gc,
    wallet_secret,
)
from actors.telemetry import BatchStats
from core.errors import DexecError
from core.quotes import TxStatus
from core.settings import Settings
from gateways.simulated.chain import dev_wallet
from gateways.simulated.schema import PoolQuote
from gateways.simulated.server import ChainParameters, ChainServer, Faults, VenueBehaviour
from storage.simchain import SimChainStore

QuoteRequest = tuple[str, str, str, int]  # (venue, token_in, token_out, amount_in)
# What the chain's wire serves: the calls made for every order.
_WIRED = ("quote_many", "quote_at_once", "latest_blockhash", "send_many", "signature_statuses",
          "block_height")
_LANDED_KEPT = 10_000  # statuses learnt with a send and not asked for yet, per process


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class SimulatedChain(WireServed):
    """The simulated chain and venue servers: one actor holds every pool, balance and
    transaction, durable in PostgreSQL (schema `simchain`) like a real chain's state."""

    def __init__(self, settings: Settings) -> None:
        tune_gc()
        s = self._settings = settings
        venues = [
            VenueBehaviour(v, quote_latency_ms=s.sim_quote_latency_ms,
                           swap_latency_ms=s.sim_swap_latency_ms,
                           faults=Faults(down=v in s.sim_down_venues, fail_rate=s.sim_fail_rate,
                                         timeout_rate=s.sim_timeout_rate),
                           seed=s.sim_seed)
            for v in s.venues
        ]
        params = ChainParameters(
            seed=s.sim_seed, block_time_s=s.sim_block_time_ms / 1000,
            blockhash_valid_blocks=s.sim_blockhash_valid_blocks,
            drift_interval_s=s.sim_drift_interval_s, drift_bps=s.sim_drift_bps,
            adverse_move_bps=s.sim_adverse_move_bps)
        wallet = str(dev_wallet(wallet_secret(s)).pubkey())
        self._server = ChainServer(SimChainStore(database_url(s)), venues, params,
                                   wallet=wallet)
        # An async actor's constructor runs inside its running event loop.
        self._server.start()
        # The same API on a loopback socket, for the processes of this node (see wire.py).
        self._wire = WireHost({name: getattr(self, name) for name in _WIRED})

    @hot
    async def quote_many(self, requests: list[QuoteRequest]
                         ) -> AsyncIterator[list[tuple[int, PoolQuote | BaseException]]]:
        """Quote each request after its venue's latency; answers stream back as they are
        ready, so a slow venue holds back no other, and an error answers its own item."""
        await self._server.ready()
        delays = self._server.quote_delays([venue for venue, *_ in requests])
        calls = [self._server.quote(*r, delay_s=d) for r, d in zip(requests, delays, strict=True)]
        if not any(delays):  # zero latency: answer the whole batch at once
            yield list(enumerate(await each(calls)))
            return
        async for chunk in as_completed(calls, gather_s=0.01):
            yield chunk

    @hot
    async def quote_at_once(self, requests: list[QuoteRequest]
                            ) -> list[PoolQuote | BaseException] | None:
        """Quote every request now, as one plain answer, when no venue of the batch takes
        time; None otherwise (then ask `quote_many`). A streamed call costs its caller
        about twice the CPU of a plain one (measured 2026-11-30: 1.1 against 0.5 ms)."""
        await self._server.ready()
        delays = self._server.quote_delays([venue for venue, *_ in requests])
        if any(delays):
            return None
        return await each([self._server.quote(*r) for r in requests])

    @hot
    async def latest_blockhash(self) -> tuple[str, int]:
        return await self._server.latest_blockhash()

    @hot
    async def send_many(self, sends: list[tuple[str, bytes]]
                        ) -> tuple[list[str | DexecError], list[TxStatus]]:
        """Send each (venue, signed bytes); answer each with its signature or its error, and
        the statuses of those that already landed (a venue without latency). A landed
        status never changes, so the client answers the first lookup of it without a call."""
        answers = await self._server.send_many(sends)
        sent = [a for a in answers if isinstance(a, str)]
        statuses = await self._server.signature_statuses(sent) if sent else []
        return answers, [s for s in statuses if s is not None and not s.pending]

    @hot
    async def signature_statuses(self, signatures: list[str]) -> list[TxStatus | None]:
        return await self._server.signature_statuses(signatures)

    @hot
    async def block_height(self) -> int:
        return await self._server.block_height()

    def set_faults(self, venue: str, **changes: Any) -> None:
        """Change a venue's failure injection at run time (a test hook)."""
        require_test_hooks(self._settings, "set_faults")
        self._server.set_faults(venue, **changes)

    def set_latency(self, quote_ms: tuple[int, int], swap_ms: tuple[int, int]) -> None:
        """Change every venue's simulated latency at run time (a test hook)."""
        require_test_hooks(self._settings, "set_latency")
        self._server.set_latency(quote_ms, swap_ms)

    async def set_adverse_move_bps(self, bps: int) -> None:
        """Have a front-runner move each pool this much before each swap (a test hook)."""
        require_test_hooks(self._settings, "set_adverse_move_bps")
        await self._server.set_adverse_move_bps(bps)

    async def move_pair(self, token_x: str, token_y: str, bps: int) -> None:
        """Move a pair's price by about `bps` on every venue (a test hook: price paths)."""
        require_test_hooks(self._settings, "move_pair")
        await self._server.move_pair(token_x, token_y, bps)

    async def executed_swaps(self, signatures: list[str]) -> int:
        return await self._server.executed_swaps(signatures)

    async def spot_price(self, venue: str, token_x: str, token_y: str) -> str:
        return str(await self._server.spot_price(venue, token_x, token_y))


class RayChainClient:
    """gateways.simulated.venue.ChainClient over the chain actor.

    Each venue gateway asks one item at a time; what all of a process's gateways ask
    together travels as one call (one quote call carries every venue's quotes). A process
    on the chain's node makes its calls over the chain's loopback wire (`wire.py`), at a
    fifth of an actor call's CPU; one on another node (or without `node_id`) calls the actor.
    """

    def __init__(self, handle: Any, window_s: float, stats: BatchStats | None = None, *,
                 node_id: str | None = None) -> None:
        self._h = WiredHandle(handle, node_id)  # node_id: this process's (None: no wire)
        self._at_once = True  # see _quote_stream
        # Quotes take the venue's time, so batches are not held back for each other.
        self._quote: Coalescer[QuoteRequest, PoolQuote] = Coalescer(
            self._quote_stream, max_in_flight=64, window_s=window_s, site="chain_quote",
            stats=stats)
        self._send: Coalescer[tuple[str, bytes], str] = Coalescer(
            self._send_many, window_s=window_s, site="chain_send", stats=stats)
        # Statuses of swaps that had landed when their send was answered, until first asked
        # for: each answers one lookup without a call (a later one asks the chain).
        self._landed: dict[str, TxStatus] = {}
        self._statuses: Coalescer[list[str], list[TxStatus | None]] = Coalescer(
            concatenated(self._caller("signature_statuses")), max_in_flight=4,
            window_s=window_s, site="chain_status", stats=stats)
        self._blockhash: Coalescer[None, tuple[str, int]] = Coalescer(
            shared(self._caller("latest_blockhash")), site="chain_blockhash", stats=stats)
        self._height: Coalescer[None, int] = Coalescer(
            shared(self._caller("block_height")), site="chain_height", stats=stats)

    def _caller(self, method: str) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any) -> Any:
            return await self._call(method, *args)

        return call

    async def _call(self, method: str, *args: Any) -> Any:
        return await self._h.call(method, *args)

    async def _quote_stream(self, requests: list[QuoteRequest]
                            ) -> AsyncIterator[list[tuple[int, PoolQuote | BaseException]]]:
        # Venues that answer at once (zero latency) are asked with a plain call, which
        # costs half a streamed one; the first batch that meets a venue with latency turns
        # this process over to streaming for good.
        if self._at_once:
            answers = await self._call("quote_at_once", requests)
            if answers is not None:
                yield list(enumerate(answers))
                return
            self._at_once = False
        async for chunk in self._h.stream("quote_many", requests):
            yield chunk

    async def _send_many(self, sends: list[tuple[str, bytes]]) -> list[str | DexecError]:
        answers, landed = await self._call("send_many", sends)
        for status in landed:
            self._landed[status.signature] = status
        while len(self._landed) > _LANDED_KEPT:  # never asked for: the oldest go first
            del self._landed[next(iter(self._landed))]
        return answers  # type: ignore[no-any-return]

    async def quote(self, venue: str, token_in: str, token_out: str, amount_in: int
                    ) -> PoolQuote:
        return await self._quote((venue, token_in, token_out, amount_in))

    async def latest_blockhash(self) -> tuple[str, int]:
        return await self._blockhash(None)

    async def send_transaction(self, venue: str, tx_bytes: bytes) -> str:
        return await self._send((venue, tx_bytes))

    async def signature_statuses(self, signatures: list[str]) -> list[TxStatus | None]:
        known = [self._landed.pop(s, None) for s in signatures]
        unknown = [s for s, status in zip(signatures, known, strict=True) if status is None]
        if not unknown:
            return known
        asked = iter(await self._statuses(unknown))
        return [status if status is not None else next(asked) for status in known]

    async def block_height(self) -> int:
        return await self._height(None)
