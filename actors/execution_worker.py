"""The ExecutionWorker actor (a thin shell over OrderExecutor) and the manager's client of it."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import ray

from actors.executor import OrderExecutor
from actors.landing import LandingWatcher
from actors.metrics import RayMetrics, batch_stats
from actors.notifier import NotifierSink
from actors.order_store import BatchedLeases, BatchedStore
from actors.shell import (
    ACTOR_GONE,
    CHAIN,
    NOTIFIER,
    WiredHandle,
    WireHost,
    WireServed,
    database_url,
    hot,
    require_test_hooks,
    tune_gc,
)
from actors.telemetry import order_log
from actors.venue_gateways import chain_rpc, venue_gateways
from actors.wire import WireClosed
from actors.worker_fleet import FinishedOutcomes, Handover, Outcome
from core.errors import DexecError, RetryableError, WorkerLost, reason
from core.orders import Order
from core.retry import RetryPolicy
from core.settings import Settings
from core.tokens import TokenRegistry
from gateways.solana.mints import MintLookup
from storage.locks import ExecutionLocks
from storage.repository import OrderRepository


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class ExecutionWorker(WireServed):
    """Execute orders handed over by the OrderManager; holds no state that must survive.

    `max_task_retries=0`: Ray never re-runs a call on its own, so never a swap; the order's
    record decides, and the manager dispatches again whatever a dead worker held.
    """

    def __init__(self, settings: Settings, name: str) -> None:
        tune_gc()
        self._settings = settings
        self.name = name
        url = database_url(settings)  # read from the secrets file once
        self._repo = OrderRepository(url, min_size=settings.db_pool_min,
                                     max_size=settings.db_pool_max)
        self._locks = ExecutionLocks(url)
        self._executor: OrderExecutor | None = None
        self._lock = asyncio.Lock()
        # The steps where this worker dies (test hooks only): the setting's, or arm_crash's.
        self._crash_at: set[str] = (set(settings.test_crash_once_at) if settings.test_hooks
                                    else set())
        self._incarnation = uuid.uuid4().hex
        self._running: set[asyncio.Task[None]] = set()
        self._finished = FinishedOutcomes()
        # Hand-overs and outcomes with a manager on this node, on a loopback socket.
        self._wire = WireHost({"accept": self.accept, "finished": self.finished})

    async def _ready(self) -> OrderExecutor:
        async with self._lock:
            if self._executor is None:
                s = self._settings
                await self._repo.open()
                batches = batch_stats()
                tokens = TokenRegistry.for_network(s.network)
                gateways = venue_gateways(s, ray.get_actor(CHAIN, namespace=s.namespace),
                                          batches)
                rpc = chain_rpc(s, gateways)
                self._executor = OrderExecutor(
                    BatchedStore(self._repo, window_s=s.batch_window_s, stats=batches),
                    gateways,
                    NotifierSink(ray.get_actor(NOTIFIER, namespace=s.namespace)),
                    tokens,
                    policy=RetryPolicy(s.max_attempts, s.retry_base_delay_s, s.retry_max_delay_s),
                    quote_timeout_s=s.quote_timeout_s,
                    confirm_poll_s=s.confirm_poll_s,
                    leases=BatchedLeases(self._locks, window_s=s.batch_window_s,
                                         stats=batches),
                    checkpoint=self._checkpoint,
                    metrics=RayMetrics(),
                    landing=LandingWatcher(s.confirm_poll_s),
                    dry_run=s.dry_run,
                    max_order_usd=s.max_order_usd,
                    mints=MintLookup(rpc, tokens) if rpc is not None else None,
                )
            return self._executor

    @hot
    async def accept(self, orders: list[Handover]) -> str:
        """Start executing the orders; their outcomes come back through `finished`.

        Returns this incarnation's id: a restarted worker has a new one, and the
        OrderManager dispatches again whatever the previous incarnation had accepted.
        """
        executor = await self._ready()
        for order_id, stored in orders:
            task = asyncio.get_running_loop().create_task(
                self._run(executor, order_id, stored))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return self._incarnation

    async def _run(self, executor: OrderExecutor, order_id: str, stored: Order | None
                   ) -> None:
        outcome: Outcome
        try:
            outcome = await executor.execute(order_id, stored)
        except DexecError as exc:
            outcome = exc
        except Exception as exc:
            order_log(order_id).exception("order %s: execution raised", order_id)
            outcome = RetryableError(f"execution raised: {reason(exc)}")
        self._finished.add(order_id, outcome)

    @hot
    async def finished(self, timeout_s: float) -> tuple[str, list[tuple[str, Outcome]]]:
        """Return (incarnation, outcomes) of the orders finished since the last call.

        Waits up to `timeout_s` for the first one; the OrderManager keeps one such call
        outstanding per worker, which also tells it at once when the worker dies.
        """
        outcomes = await self._finished.take(timeout_s)
        return self._incarnation, outcomes

    def arm_crash(self, point: str | None) -> None:
        """Die with SIGKILL when an order next reaches `point` (routing, signed, sent).

        Fault injection for the crash-recovery tests; a restarted worker is disarmed.
        """
        require_test_hooks(self._settings, "arm_crash")
        self._crash_at = {point} if point is not None else set()

    async def _checkpoint(self, point: str, order_id: str) -> None:
        if point not in self._crash_at:
            return
        if point in self._settings.test_crash_once_at and not _first_crash(self._settings,
                                                                            point):
            self._crash_at.discard(point)  # a worker already died here: once per data folder
            return
        order_log(order_id).warning("order %s: crash injected at %s", order_id, point)
        os.kill(os.getpid(), signal.SIGKILL)

    def ping(self) -> str:
        return self.name

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        return os.getpid()


class WorkerClient:
    """actors.worker_fleet.WorkerHandle over a worker actor (its wire on the same node).

    A call whose worker died, or whose wire broke, raises WorkerLost: what the worker held
    is dispatched again, and its lease keeps an order still running from running twice.
    """

    def __init__(self, handle: WiredHandle) -> None:
        self._h = handle

    async def accept(self, orders: list[Handover]) -> str:
        try:
            incarnation: str = await self._h.call("accept", orders)
        except (ACTOR_GONE, WireClosed) as exc:
            raise WorkerLost(reason(exc)) from None
        return incarnation

    async def finished(self, timeout_s: float) -> tuple[str, list[tuple[str, Outcome]]]:
        try:
            answer: tuple[str, list[tuple[str, Outcome]]] = (
                await self._h.call("finished", timeout_s))
        except (ACTOR_GONE, WireClosed) as exc:
            raise WorkerLost(reason(exc)) from None
        return answer


def _first_crash(settings: Settings, point: str) -> bool:
    """Claim the one crash at `point` for this data folder (a marker file made exclusively)."""
    folder = (Path(settings.secrets_file).parent if settings.secrets_file is not None
              else Path(settings.data_dir).resolve())
    try:
        os.close(os.open(folder / f"crashed-at-{point}", os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                         0o600))
    except FileExistsError:
        return False
    return True
