"""The Ray actors: thin shells that build their cores from settings. Every ray.* call is here."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.batching import (
    BatchedLeases,
    BatchedStore,
    Coalescer,
    as_completed,
    concatenated,
    each,
    shared,
)
from actors.dispatch import Dispatcher, WorkerLost
from actors.execution import LandingWatcher, OrderExecutor
from actors.fanout import EventBatcher, EventHub
from actors.telemetry import BatchStats, order_log
from core.errors import DexecError, RetryableError, VenueUnavailable, reason
from core.limits import AccountRateLimit
from core.orders import NewOrder, OrderEvent
from core.quotes import Quote, SignedSwap, TxStatus
from core.retry import RetryPolicy
from core.settings import Settings
from core.tokens import TokenRegistry
from gateways.simulated.chain import ChainSnapshot, SimChain, dev_wallet
from gateways.simulated.journal import ChainJournal
from gateways.simulated.venue import Faults, SimulatedVenue, VenueBehaviour
from storage.locks import ExecutionLocks
from storage.repository import OrderRepository
from storage.simchain import SimChainStore

log = logging.getLogger(__name__)

CHAIN = "SimChain"
NOTIFIER = "Notifier"
MANAGER = "OrderManager"


def worker_name(index: int) -> str:
    return f"ExecutionWorker-{index}"


def _database_url(settings: Settings) -> str:
    if settings.database_url is None:
        raise RuntimeError("database_url must be resolved before actors start")
    return settings.database_url.get_secret_value()


def tune_gc() -> None:
    """Make Python's garbage collector cheap for a long-lived, allocation-heavy process.

    Measured in a worker at about 400 orders/s (gc.callbacks timing every collection):
    1.0-1.3 s of every 10 s went to collections, about 34 young, 3 middle and 0.3 full ones
    a second, with some 100,000 tracked objects, most of them left by Ray and the libraries
    at start-up. Freezing those takes them out of every later collection, and a larger first
    generation lets short-lived objects (an order's events, answers, futures) die by
    reference counting before a collection has to walk them. With both, no collection was
    recorded in the next 40 s run.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _hot(method: Any) -> Any:
    """Mark an actor method called for every order or every few milliseconds.

    Ray records a task event (shown in the dashboard's task list) for each call; for these
    methods that is millions of rows nobody reads and CPU on every call, so they keep none.
    The actors themselves, their logs and metrics stay in the dashboard.
    """
    return ray.method(enable_task_events=False)(method)


# -- metrics --------------------------------------------------------------------------------

LATENCY_BOUNDARIES = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                      30.0, 60.0]


class RayMetrics:
    """Export the cores' metrics through ray.util.metrics (dashboard and Prometheus)."""

    def __init__(self) -> None:
        from ray.util import metrics as m

        self._submitted = m.Counter("dexec_orders_submitted", "Orders accepted",
                                    tag_keys=("type",))
        self._finished = m.Counter("dexec_orders_finished", "Orders that reached a terminal status",
                                   tag_keys=("status", "venue"))
        self._latency = m.Histogram("dexec_order_latency_seconds", "Submit to terminal",
                                    boundaries=LATENCY_BOUNDARIES, tag_keys=("status",))
        self._stage = m.Histogram("dexec_order_stage_seconds",
                                  "Time spent in each status (pending is the queue wait)",
                                  boundaries=LATENCY_BOUNDARIES, tag_keys=("stage",))
        self._retries = m.Counter("dexec_order_retries", "New attempts after a failure",
                                  tag_keys=("error_class",))
        self._waiting = m.Gauge("dexec_orders_waiting", "Orders queued for a worker")
        self._executing = m.Gauge("dexec_orders_executing", "Orders being executed")

    def order_submitted(self, order_type: str) -> None:
        self._submitted.inc(tags={"type": order_type})

    def order_finished(self, status: str, venue: str, seconds: float) -> None:
        self._finished.inc(tags={"status": status, "venue": venue})
        self._latency.observe(seconds, tags={"status": status})

    def stage(self, stage: str, seconds: float) -> None:
        self._stage.observe(seconds, tags={"stage": stage})

    def retry(self, error_class: str) -> None:
        self._retries.inc(tags={"error_class": error_class})

    def queue(self, waiting: int, executing: int) -> None:
        self._waiting.set(waiting)
        self._executing.set(executing)


class RayBatchMetrics:
    """Export a process's BatchStats sums as counters, per call site (label `site`)."""

    def __init__(self) -> None:
        from ray.util import metrics as m

        keys = ("site",)
        self._counters = (
            m.Counter("dexec_batch_calls", "Batched calls made", tag_keys=keys),
            m.Counter("dexec_batch_items", "Items the batched calls carried", tag_keys=keys),
            m.Counter("dexec_batch_wait_seconds",
                      "Summed time the oldest item of each batch waited for it to leave",
                      tag_keys=keys),
            m.Counter("dexec_batch_call_seconds", "Summed round trip of the batched calls",
                      tag_keys=keys),
        )

    def record(self, site: str, calls: int, items: int, wait_s: float, call_s: float) -> None:
        tags = {"site": site}
        for counter, value in zip(self._counters, (calls, items, wait_s, call_s), strict=True):
            if value > 0:  # Ray's counters refuse an increment of 0
                counter.inc(value, tags=tags)


def batch_stats() -> BatchStats:
    """Return a BatchStats for this process that exports to Ray's metrics every 5 s."""
    return BatchStats(RayBatchMetrics().record)


class VenueCallMetrics:
    """Latency and errors of every venue call, measured where the gateway runs."""

    def __init__(self, venue: str) -> None:
        from ray.util import metrics as m

        self._venue = venue
        self._seconds = m.Histogram("dexec_venue_call_seconds", "Venue call latency",
                                    boundaries=LATENCY_BOUNDARIES, tag_keys=("venue", "call"))
        self._errors = m.Counter("dexec_venue_errors", "Venue calls that failed",
                                 tag_keys=("venue", "call", "code"))

    @contextlib.asynccontextmanager
    async def timed(self, call: str) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            yield
        except DexecError as exc:
            self._errors.inc(tags={"venue": self._venue, "call": call, "code": exc.code})
            raise
        except Exception as exc:
            # Whatever the venue's library raised: a retryable error with its reason, so
            # the caller's attempt cap bounds it.
            self._errors.inc(tags={"venue": self._venue, "call": call, "code": "error"})
            raise VenueUnavailable(f"{self._venue} {call} failed: {reason(exc)}",
                                   venue=self._venue) from None
        finally:
            self._seconds.observe(time.perf_counter() - started,
                                  tags={"venue": self._venue, "call": call})


# -- simulated chain ------------------------------------------------------------------------


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class SimulatedChain:
    """The simulated chain: one actor holds all pools, balances and transactions.

    Its state is durable in PostgreSQL (schema `simchain`), like a real chain's: every
    change is saved before the call that made it answers, so a restarted app (or chain
    actor) finds every transaction it ever accepted, landed or pending.
    """

    def __init__(self, settings: Settings) -> None:
        tune_gc()
        self._settings = settings
        self._store = SimChainStore(_database_url(settings))
        self._chain: SimChain | None = None
        self._journal: ChainJournal | None = None
        self._landing_slots: set[float] = set()
        self._landing: set[asyncio.Future[None]] = set()
        self._venues = {
            v: VenueBehaviour(
                v, quote_latency_ms=settings.sim_quote_latency_ms,
                swap_latency_ms=settings.sim_swap_latency_ms,
                faults=Faults(down=v in settings.sim_down_venues,
                              fail_rate=settings.sim_fail_rate,
                              timeout_rate=settings.sim_timeout_rate),
                seed=settings.sim_seed)
            for v in settings.venues
        }
        # An async actor's constructor runs inside its running event loop.
        self._started = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> None:
        delay = 0.5
        while True:  # the database may be down when the chain (re)starts: keep trying
            try:
                await self._store.open()
                rows = await self._store.load()
                break
            except DexecError as exc:
                log.warning("chain store unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        s = self._settings
        now = time.time()
        block_time, valid = s.sim_block_time_ms / 1000, s.sim_blockhash_valid_blocks
        if rows is None:
            chain = SimChain(seed=s.sim_seed, block_time_s=block_time,
                             blockhash_valid_blocks=valid, start_time=now)
            wallet = str(dev_wallet(_secret(s.wallet_keypair)).pubkey())
            chain.fund(wallet, dict.fromkeys(("SOL", "USDC", "USDT", "RAY"), 10**15))
        else:
            chain = SimChain.restore(ChainSnapshot.from_rows(rows), block_time_s=block_time,
                                     blockhash_valid_blocks=valid, now=now)
            log.info("simulated chain restored from the database")
        chain.adverse_move_bps = s.sim_adverse_move_bps
        self._chain = chain
        self._journal = ChainJournal(chain, self._store.save)
        try:
            await self._saves.persist()
        except DexecError as exc:  # kept unsaved; the next change saves it too
            log.warning("could not save the chain's start yet: %s", exc)
        due = chain.next_land_at()
        if due is not None:
            self._land_at(due)
        if s.sim_drift_interval_s > 0:
            asyncio.get_running_loop().create_task(self._drift_loop())

    async def _ready(self) -> SimChain:
        await asyncio.shield(self._started)
        assert self._chain is not None  # noqa: S101 - set by _start
        return self._chain

    @property
    def _saves(self) -> ChainJournal:
        assert self._journal is not None  # noqa: S101 - set by _start
        return self._journal

    def _land_at(self, when: float) -> None:
        # One timer per 10 ms slot: landing scans the pending transactions, so thousands
        # of sends a second must not mean thousands of scans.
        slot = math.ceil(when * 100) / 100
        if slot in self._landing_slots:
            return
        self._landing_slots.add(slot)

        def land() -> None:
            self._landing_slots.discard(slot)
            task = asyncio.ensure_future(self._land())
            self._landing.add(task)
            task.add_done_callback(self._landing.discard)

        asyncio.get_running_loop().call_later(max(0.0, slot - time.time()), land)

    async def _land(self) -> None:
        chain = await self._ready()
        if chain.process(time.time()):
            try:
                await self._saves.persist()
            except Exception as exc:
                log.warning("could not save landed transactions yet: %s", exc)

    async def _drift_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.sim_drift_interval_s)
            chain = await self._ready()
            chain.drift(time.time(), self._settings.sim_drift_bps)
            try:
                await self._saves.persist()
            except Exception as exc:
                log.warning("could not save the market's drift yet: %s", exc)

    def _venue(self, venue: str) -> VenueBehaviour:
        behaviour = self._venues.get(venue)
        if behaviour is None:
            raise VenueUnavailable(f"no venue named {venue}", venue=venue)
        return behaviour

    async def _quote(self, venue: str, token_in: str, token_out: str, amount_in: int,
                     delay_s: float) -> dict[str, object]:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        self._venue(venue).check()
        chain = await self._ready()
        pool, x_to_y, result, fee_bps = chain.quote(venue, token_in, token_out, amount_in,
                                                    time.time())
        return {"pool": pool, "x_to_y": x_to_y, "amount_out": result.amount_out,
                "fee": result.fee, "fee_bps": str(fee_bps),
                "price_impact_bps": result.price_impact_bps}

    @_hot
    async def quote_many(self, requests: list[tuple[str, str, str, int]]
                         ) -> AsyncIterator[list[tuple[int, dict[str, object] | BaseException]]]:
        """Quote each (venue, token_in, token_out, amount_in) after that venue's latency.

        Answers stream back as they are ready, so a slow venue holds back no other; an
        error answers its own item.
        """
        await self._ready()
        # An unknown venue waits for nothing; _quote answers it with its error.
        delays = [self._venues[v].quote_delay_s() if v in self._venues else 0.0
                  for v, *_ in requests]
        calls = [self._quote(*r, delay_s=d) for r, d in zip(requests, delays, strict=True)]
        if not any(delays):  # zero latency: answer the whole batch at once
            yield list(enumerate(await each(calls)))
            return
        async for chunk in as_completed(calls, gather_s=0.01):
            yield chunk

    @_hot
    async def latest_blockhash(self) -> tuple[str, int]:
        answer = (await self._ready()).latest_blockhash(time.time())
        # A sender must find it again after a restart.
        await self._saves.persist_unless_durable(blockhashes=[answer[0]])
        return answer

    @_hot
    async def send_many(self, sends: list[tuple[str, bytes]]) -> list[str | DexecError]:
        """Accept each (venue, signed bytes); answer once all accepted are durable.

        A swap lands after its venue's swap latency; a failure injected for the venue
        refuses the send before the chain sees it.
        """
        chain = await self._ready()
        now = time.time()
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

    @_hot
    async def signature_statuses(self, signatures: list[str]) -> list[TxStatus | None]:
        statuses = (await self._ready()).signature_statuses(signatures, time.time())
        # Never report a landing that a crash could undo.
        await self._saves.persist_unless_durable(s.signature for s in statuses if s is not None)
        return statuses

    @_hot
    async def block_height(self) -> int:
        return (await self._ready()).block_height(time.time())

    def set_faults(self, venue: str, **changes: Any) -> None:
        """Change a venue's failure injection at run time (tests and demos)."""
        for key, value in changes.items():
            setattr(self._venue(venue).faults, key, value)

    def set_latency(self, quote_ms: tuple[int, int], swap_ms: tuple[int, int]) -> None:
        """Change every venue's simulated latency at run time (tests and demos)."""
        for behaviour in self._venues.values():
            behaviour.quote_latency_ms, behaviour.swap_latency_ms = quote_ms, swap_ms

    async def set_adverse_move_bps(self, bps: int) -> None:
        (await self._ready()).adverse_move_bps = bps

    async def executed_swaps(self, signatures: list[str]) -> int:
        return (await self._ready()).executed_swaps(signatures)

    async def spot_price(self, venue: str, token_x: str, token_y: str) -> str:
        return str((await self._ready()).spot_price(venue, token_x, token_y))


class _ChainClient:
    """Adapt the chain actor's handle to gateways.simulated.venue.ChainClient.

    Each venue gateway asks one item at a time; what all of a process's gateways ask
    together travels as one actor call (one quote call carries every venue's quotes).
    """

    def __init__(self, handle: Any, window_s: float, stats: BatchStats | None = None) -> None:
        self._h = handle
        # Quotes take the venue's time, so batches are not held back for each other.
        self._quote: Coalescer[tuple[str, str, str, int], dict[str, object]] = Coalescer(
            self._quote_stream, max_in_flight=64, window_s=window_s, site="chain_quote",
            stats=stats)
        self._send: Coalescer[tuple[str, bytes], str] = Coalescer(
            self._h.send_many.remote, window_s=window_s, site="chain_send", stats=stats)
        self._statuses: Coalescer[list[str], list[TxStatus | None]] = Coalescer(
            concatenated(self._h.signature_statuses.remote), max_in_flight=4,
            window_s=window_s, site="chain_status", stats=stats)
        self._blockhash: Coalescer[None, tuple[str, int]] = Coalescer(
            shared(self._h.latest_blockhash.remote), site="chain_blockhash", stats=stats)
        self._height: Coalescer[None, int] = Coalescer(
            shared(self._h.block_height.remote), site="chain_height", stats=stats)

    async def _quote_stream(self, requests: list[tuple[str, str, str, int]]
                            ) -> AsyncIterator[list[tuple[int, Any]]]:
        async for ref in self._h.quote_many.remote(requests):
            yield await ref

    async def quote(self, venue: str, token_in: str, token_out: str, amount_in: int
                    ) -> dict[str, object]:
        return await self._quote((venue, token_in, token_out, amount_in))

    async def latest_blockhash(self) -> tuple[str, int]:
        return await self._blockhash(None)

    async def send_transaction(self, venue: str, tx_bytes: bytes) -> str:
        return await self._send((venue, tx_bytes))

    async def signature_statuses(self, signatures: list[str]) -> list[TxStatus | None]:
        return await self._statuses(signatures)

    async def block_height(self) -> int:
        return await self._height(None)


def _repository(settings: Settings) -> OrderRepository:
    """Return a repository whose pool opens later, inside the actor's event loop."""
    return OrderRepository(_database_url(settings), min_size=settings.db_pool_min,
                           max_size=settings.db_pool_max)


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


# -- venue gateways -------------------------------------------------------------------------


class _MeteredGateway:
    """A venue gateway whose every call is timed and whose errors are classified.

    Gateways run in-process in each worker and replica, as concurrent asyncio tasks: they
    hold no order state, and a call costs no extra actor hop.
    """

    def __init__(self, gateway: SimulatedVenue) -> None:
        self.name = gateway.name
        self._gateway = gateway
        self._metrics = VenueCallMetrics(gateway.name)

    async def quote(self, input_mint: str, output_mint: str, amount_in: int) -> Quote:
        async with self._metrics.timed("quote"):
            return await self._gateway.quote(input_mint, output_mint, amount_in)

    async def build_swap(self, quote: Quote, min_amount_out: int, memo: str) -> SignedSwap:
        async with self._metrics.timed("build"):
            return await self._gateway.build_swap(quote, min_amount_out, memo)

    async def send(self, swap: SignedSwap) -> None:
        async with self._metrics.timed("send"):
            await self._gateway.send(swap)

    async def statuses(self, signatures: list[str]) -> list[TxStatus | None]:
        async with self._metrics.timed("status"):
            return await self._gateway.statuses(signatures)

    async def block_height(self) -> int:
        return await self._gateway.block_height()


def venue_gateways(settings: Settings, stats: BatchStats | None = None
                   ) -> list[_MeteredGateway]:
    """Build this process's gateway for every venue (call inside an actor or replica).

    Each has its own rate limit (`venue_rate_limit_per_s` holds per process). They share
    one client of the simulated chain, so their calls travel together.
    """
    chain = _ChainClient(ray.get_actor(CHAIN, namespace=settings.namespace),
                         settings.batch_window_s, stats)
    wallet = dev_wallet(_secret(settings.wallet_keypair))
    tokens = TokenRegistry()
    return [
        _MeteredGateway(SimulatedVenue(v, chain, wallet, tokens,
                                       rate_limit_per_s=settings.venue_rate_limit_per_s))
        for v in settings.venues
    ]


# -- notifier -------------------------------------------------------------------------------


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Notifier:
    """Deliver status events to the ingress replicas that hold the WebSocket connections."""

    def __init__(self) -> None:
        tune_gc()
        self.hub = EventHub()

    @_hot
    def publish(self, events: list[dict[str, Any]]) -> None:
        self.hub.publish(events)

    @_hot
    def watch(self, replica_id: str, order_ids: list[str]) -> None:
        self.hub.watch(replica_id, order_ids)

    @_hot
    def unwatch(self, replica_id: str, order_ids: list[str]) -> None:
        self.hub.unwatch(replica_id, order_ids)

    @_hot
    async def take(self, replica_id: str, timeout_s: float) -> list[dict[str, Any]]:
        return await self.hub.take(replica_id, timeout_s)


class _NotifierSink:
    """Batch a worker's events into one Notifier call every few milliseconds."""

    def __init__(self, handle: Any) -> None:
        self._batcher = EventBatcher(self._send)
        self._h = handle

    async def _send(self, events: list[dict[str, Any]]) -> None:
        await self._h.publish.remote(events)

    def publish(self, event: OrderEvent) -> None:
        self._batcher.add(event.to_json())


# -- execution workers ----------------------------------------------------------------------


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class ExecutionWorker:
    """Execute orders handed over by the OrderManager; holds no state that must survive."""

    def __init__(self, settings: Settings, name: str) -> None:
        tune_gc()
        self._settings = settings
        self.name = name
        self._repo = _repository(settings)
        self._locks = ExecutionLocks(_database_url(settings))
        self._executor: OrderExecutor | None = None
        self._lock = asyncio.Lock()
        self._crash_at: str | None = None
        self._incarnation = uuid.uuid4().hex
        self._running: set[asyncio.Task[None]] = set()
        self._finished: list[tuple[str, Any]] = []
        self._finished_ready = asyncio.Event()

    async def _ready(self) -> OrderExecutor:
        async with self._lock:
            if self._executor is None:
                s = self._settings
                repo = self._repo
                await repo.open()
                batches = batch_stats()
                gateways = venue_gateways(s, batches)
                sink = _NotifierSink(ray.get_actor(NOTIFIER, namespace=s.namespace))
                self._executor = OrderExecutor(
                    BatchedStore(repo, window_s=s.batch_window_s, stats=batches),
                    gateways, sink, TokenRegistry(),
                    policy=RetryPolicy(s.max_attempts, s.retry_base_delay_s, s.retry_max_delay_s),
                    quote_timeout_s=s.quote_timeout_s,
                    confirm_poll_s=s.confirm_poll_s,
                    leases=BatchedLeases(self._locks, window_s=s.batch_window_s,
                                         stats=batches),
                    checkpoint=self._checkpoint,
                    metrics=RayMetrics(),
                    landing=LandingWatcher(s.confirm_poll_s),
                )
            return self._executor

    @_hot
    async def accept(self, order_ids: list[str]) -> str:
        """Start executing the orders; their outcomes come back through `finished`.

        Returns this incarnation's id: a restarted worker has a new one, and the
        OrderManager dispatches again whatever the previous incarnation had accepted.
        """
        executor = await self._ready()
        for order_id in order_ids:
            task = asyncio.get_running_loop().create_task(self._run(executor, order_id))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return self._incarnation

    async def _run(self, executor: OrderExecutor, order_id: str) -> None:
        outcome: str | DexecError | None
        try:
            outcome = await executor.execute(order_id)
        except DexecError as exc:
            outcome = exc
        except Exception as exc:
            order_log(order_id).exception("order %s: execution raised", order_id)
            outcome = RetryableError(f"execution raised: {reason(exc)}")
        self._finished.append((order_id, outcome))
        self._finished_ready.set()

    @_hot
    async def finished(self, timeout_s: float) -> tuple[str, list[tuple[str, Any]]]:
        """Return (incarnation, outcomes) of the orders finished since the last call.

        Waits up to `timeout_s` for the first one; the OrderManager keeps one such call
        outstanding per worker, which also tells it at once when the worker dies.
        """
        if not self._finished:
            self._finished_ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._finished_ready.wait()
        outcomes, self._finished = self._finished, []
        return self._incarnation, outcomes

    def arm_crash(self, point: str | None) -> None:
        """Die with SIGKILL when an order next reaches `point` (routing, signed, sent).

        Fault injection for the crash-recovery tests; a restarted worker is disarmed.
        """
        self._crash_at = point

    async def _checkpoint(self, point: str, order_id: str) -> None:
        if self._crash_at == point:
            order_log(order_id).warning("order %s: crash injected at %s", order_id, point)
            os.kill(os.getpid(), signal.SIGKILL)

    def ping(self) -> str:
        return self.name

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        return os.getpid()


class WorkerFleet:
    """The ExecutionWorker actors, owned by the OrderManager.

    With `workers_per_node` = 0 it keeps `workers` actors spread over the cluster. Otherwise
    it keeps that many on every alive node (a node that joins gets workers; the workers of a
    node that leaves are retired and their orders dispatched again).

    Workers are pinned to their node hard: measured here with ray.cluster_utils, soft
    affinity put a third of the workers on some other node even when their own node was
    free. A hard-pinned actor whose node died would wait forever to restart, so reconcile
    retires it (ray.kill) as soon as the node is gone from ray.nodes().
    """

    def __init__(self, settings: Settings, batches: BatchStats | None = None) -> None:
        self._settings = settings
        self._batches = batches
        self._handles: dict[str, Any] = {}
        self._links: dict[str, _WorkerLink] = {}
        self._home: dict[str, str] = {}  # worker name -> node id it is pinned to
        self._reconciling = asyncio.Lock()  # one reconcile at a time: it awaits the GCS

    def names(self) -> list[str]:
        return list(self._handles)

    async def execute(self, name: str, order_id: str) -> str | None:
        link = self._links.get(name)
        if link is None:
            raise WorkerLost(f"{name} was retired")
        return await link.execute(order_id)

    def _add(self, name: str, handle: Any) -> None:
        self._handles[name] = handle
        self._links[name] = _WorkerLink(name, handle, self._settings.batch_window_s,
                                        self._batches)

    def _retire(self, name: str) -> None:
        with contextlib.suppress(Exception):
            ray.kill(self._handles[name], no_restart=True)
        del self._handles[name], self._home[name]
        self._links.pop(name).close(f"{name} was retired")

    async def reconcile(self) -> None:
        """Create missing workers and retire those whose node has left."""
        async with self._reconciling:
            await self._reconcile()

    async def _reconcile(self) -> None:
        s = self._settings
        if s.workers_per_node <= 0:
            for i in range(s.workers):
                if worker_name(i) not in self._handles:
                    self._add(worker_name(i), _worker(s, worker_name(i), "SPREAD"))
            return
        # ray.nodes() is a blocking call to the GCS: keep it off the manager's event loop.
        nodes = await asyncio.to_thread(ray.nodes)
        alive = {n["NodeID"] for n in nodes if n.get("Alive")}
        for node_id in alive:
            for k in range(s.workers_per_node):
                name = f"ExecutionWorker-{node_id[:8]}-{k}"
                if name not in self._handles:
                    strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
                    self._add(name, _worker(s, name, strategy))
                    self._home[name] = node_id
                    log.info("worker %s placed on node %s", name, node_id[:8])
        for name, node_id in list(self._home.items()):
            if node_id not in alive:
                log.info("node %s left: retiring %s", node_id[:8], name)
                self._retire(name)


_WORKER_GONE = (ActorDiedError, ActorUnavailableError, RayActorError)


class _WorkerLink:
    """The OrderManager's side of one worker: hand-overs and outcomes travel in batches.

    Orders handed over in the same turn go in one `accept` call; one `finished` call is
    always outstanding and brings back every outcome since the last. When that call fails
    the worker died: every order it held is reported lost, to be dispatched again (the
    execution lease keeps a still-running one from being executed twice).
    """

    def __init__(self, name: str, handle: Any, window_s: float,
                 stats: BatchStats | None = None) -> None:
        self._name = name
        self._h = handle
        self._waiting: dict[str, asyncio.Future[str | None]] = {}
        self._accepted_by: dict[str, str] = {}  # order id -> incarnation that accepted it
        self._accept: Coalescer[str, None] = Coalescer(self._accept_many, window_s=window_s,
                                                       site="worker_accept", stats=stats)
        self._poller: asyncio.Task[None] | None = None
        self._closed: str | None = None

    async def execute(self, order_id: str) -> str | None:
        if self._closed is not None:
            raise WorkerLost(self._closed)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._waiting[order_id] = future
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        try:
            await self._accept(order_id)
            return await future
        finally:
            self._waiting.pop(order_id, None)
            self._accepted_by.pop(order_id, None)

    async def _accept_many(self, order_ids: list[str]) -> list[None]:
        try:
            incarnation: str = await self._h.accept.remote(order_ids)
        except _WORKER_GONE as exc:
            raise WorkerLost(reason(exc)) from None
        for order_id in order_ids:
            if order_id in self._waiting:
                self._accepted_by[order_id] = incarnation
        return [None] * len(order_ids)

    async def _poll(self) -> None:
        while self._waiting and self._closed is None:
            try:
                incarnation, outcomes = await self._h.finished.remote(1.0)
            except _WORKER_GONE as exc:
                self._lose(f"{self._name} died: {reason(exc)}")
                await asyncio.sleep(0.2)
                continue
            for order_id, outcome in outcomes:
                future = self._waiting.get(order_id)
                if future is None or future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
            # A worker that restarted between two polls forgot what it had accepted.
            self._lose(f"{self._name} restarted", survivor=incarnation)

    def _lose(self, why: str, *, survivor: str | None = None) -> None:
        """Report lost every waiting order, or with `survivor` those another incarnation
        accepted (an order whose `accept` has not answered yet is not known to be lost)."""
        for order_id, future in list(self._waiting.items()):
            accepted_by = self._accepted_by.get(order_id)
            gone = survivor is None or (accepted_by is not None and accepted_by != survivor)
            if gone and not future.done():
                future.set_exception(WorkerLost(why))

    def close(self, why: str) -> None:
        self._closed = why
        self._lose(why)


def _worker(settings: Settings, name: str, strategy: Any) -> Any:
    return ExecutionWorker.options(  # type: ignore[attr-defined]
        name=name, namespace=settings.namespace, get_if_exists=True, lifetime="detached",
        max_concurrency=settings.worker_concurrency + 8, scheduling_strategy=strategy,
    ).remote(settings, name)


# -- order manager --------------------------------------------------------------------------


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class OrderManager:
    """Persist orders, own the queue of pending ones, dispatch them to the worker pool.

    On (re)start it reloads every non-terminal order from PostgreSQL.
    """

    def __init__(self, settings: Settings) -> None:
        tune_gc()
        self._settings = settings
        self._repo = _repository(settings)
        self._fleet = WorkerFleet(settings, batch_stats())
        self._dispatcher: Dispatcher | None = None
        self._lock = asyncio.Lock()
        # Resume open orders as soon as the actor (re)starts, not on the first submission.
        self._startup = asyncio.get_event_loop().create_task(self._start_when_possible())

    async def _start_when_possible(self) -> None:
        delay = 0.5
        while self._dispatcher is None:
            try:
                await self._ready()
            except Exception as exc:  # the database may be down: keep trying
                log.warning("OrderManager start failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        while True:  # the pool follows the cluster: nodes join and leave
            await asyncio.sleep(2.0)
            try:
                await self._fleet.reconcile()
            except Exception:
                log.exception("worker reconcile failed")

    async def _ready(self) -> Dispatcher:
        async with self._lock:
            if self._dispatcher is None:
                s = self._settings
                repo = self._repo
                await repo.open()
                await self._fleet.reconcile()
                dispatcher = Dispatcher(
                    repo, self._fleet, per_worker=s.worker_concurrency,
                    max_open_orders=s.max_open_orders,
                    rate_limit=AccountRateLimit(s.account_orders_per_minute),
                    metrics=RayMetrics(),
                )
                await dispatcher.start()
                self._dispatcher = dispatcher
            return self._dispatcher

    async def start(self) -> dict[str, int]:
        return (await self._ready()).stats()

    @_hot
    async def submit_many(self, news: list[NewOrder]) -> list[Any]:
        """Submit a batch (one transaction); each answer is (order, created) or its error."""
        return await (await self._ready()).submit_many(news)

    async def stats(self) -> dict[str, int]:
        return (await self._ready()).stats()

    async def worker_names(self) -> list[str]:
        await self._ready()
        return self._fleet.names()

    async def set_limits(self, max_open_orders: int, account_orders_per_minute: int) -> None:
        """Change the admission limits at run time (an operator's lever, and the tests')."""
        (await self._ready()).set_limits(max_open_orders,
                                         AccountRateLimit(account_orders_per_minute))


# -- the whole stack ------------------------------------------------------------------------


@dataclass
class Stack:
    chain: Any
    notifier: Any
    manager: Any


def start_stack(settings: Settings) -> Stack:
    """Create (or find) every named actor; call from a driver connected to Ray.

    The OrderManager creates the ExecutionWorkers itself (its pool follows the cluster).
    """
    common = {"namespace": settings.namespace, "get_if_exists": True, "lifetime": "detached"}
    chain = SimulatedChain.options(name=CHAIN, **common).remote(settings)  # type: ignore[attr-defined]
    notifier = Notifier.options(name=NOTIFIER, **common).remote()  # type: ignore[attr-defined]
    manager = OrderManager.options(name=MANAGER, max_concurrency=10_000, **common).remote(settings)  # type: ignore[attr-defined]
    ray.get(chain.block_height.remote())
    ray.get(manager.start.remote())
    ray.get([ray.get_actor(n, namespace=settings.namespace).ping.remote()
             for n in ray.get(manager.worker_names.remote())])
    return Stack(chain, notifier, manager)


def stop_stack(settings: Settings) -> None:
    """Kill every named actor in the stack's namespace (they are detached)."""
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == settings.namespace:
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(entry["name"], namespace=settings.namespace),
                         no_restart=True)
