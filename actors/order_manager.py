"""The OrderManager actor: a thin shell over the Dispatcher, and the Ray side of its fleet."""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.dispatcher import Dispatcher
from actors.execution_worker import ExecutionWorker, WorkerClient
from actors.metrics import RayMetrics, batch_stats
from actors.notifier import NotifierSink
from actors.price_watcher import VenueMarket
from actors.shell import (
    CHAIN,
    NOTIFIER,
    WiredHandle,
    WireHost,
    WireServed,
    database_url,
    hot,
    require_test_hooks,
    this_node,
    tune_gc,
)
from actors.venue_gateways import chain_rpc, venue_gateways
from actors.worker_fleet import WorkerFleet
from core.errors import DexecError
from core.limits import AccountRateLimit, OpenOrders, amount_caps, latency_admission
from core.orders import NewOrder, Order, Submission
from core.retry import retry_until_done
from core.settings import Settings
from core.tokens import TokenRegistry
from gateways.solana.mints import MintLookup
from storage.repository import OrderRepository

RECONCILE_EVERY_S = 2.0  # how often the pool follows the cluster (nodes join and leave)


class RayWorkers:
    """actors.worker_fleet.WorkerPlacement on Ray: detached, named ExecutionWorker actors.

    Workers are pinned to their node hard: measured here with ray.cluster_utils, soft
    affinity put a third of the workers on some other node even when their own node was
    free. A hard-pinned actor whose node died would wait forever to restart, so the fleet
    retires it as soon as the node is gone from ray.nodes().
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._handles: dict[str, Any] = {}
        # The manager's node: a worker there is reached over its loopback wire.
        self._node = this_node() if settings.actor_wire else None

    def spawn(self, name: str, node_id: str | None) -> WorkerClient:
        s = self._settings
        strategy: Any = ("SPREAD" if node_id is None
                         else NodeAffinitySchedulingStrategy(node_id, soft=False))
        handle = ExecutionWorker.options(  # type: ignore[attr-defined]
            name=name, namespace=s.namespace, get_if_exists=True, lifetime="detached",
            max_concurrency=s.worker_concurrency + 8, scheduling_strategy=strategy,
        ).remote(s, name)
        self._handles[name] = handle
        return WorkerClient(WiredHandle(handle, self._node))

    def retire(self, name: str) -> None:
        ray.kill(self._handles.pop(name), no_restart=True)

    async def alive_nodes(self) -> set[str]:
        # ray.nodes() is a blocking call to the GCS: keep it off the manager's event loop.
        nodes = await asyncio.to_thread(ray.nodes)
        return {n["NodeID"] for n in nodes if n.get("Alive")}


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class OrderManager(WireServed):
    """Persist orders, own the queue of pending ones, dispatch them to the worker pool.

    On (re)start it reloads every non-terminal order from PostgreSQL.
    """

    def __init__(self, settings: Settings) -> None:
        tune_gc()
        s = settings
        self._settings = s
        self._repo = OrderRepository(database_url(s), min_size=s.db_pool_min,
                                     max_size=s.db_pool_max)
        self._fleet = WorkerFleet(RayWorkers(s), workers=s.workers,
                                  workers_per_node=s.workers_per_node,
                                  window_s=s.batch_window_s, stats=batch_stats())
        self._dispatcher: Dispatcher | None = None
        self._lock = asyncio.Lock()
        # Resume open orders as soon as the actor (re)starts, not on the first submission.
        self._startup = asyncio.get_event_loop().create_task(self._run())
        # Submissions from the ingress replicas of this node, on a loopback socket.
        self._wire = WireHost({"submit_many": self.submit_many})

    async def _run(self) -> None:
        await retry_until_done(self._ready, what="OrderManager start")
        while True:
            await asyncio.sleep(RECONCILE_EVERY_S)
            await retry_until_done(self._fleet.reconcile, what="worker reconcile")

    async def _ready(self) -> Dispatcher:
        async with self._lock:
            if self._dispatcher is None:
                s = self._settings
                await self._repo.open()
                await self._fleet.reconcile()
                # The price watcher quotes with gateways of its own, which never sign.
                chain = ray.get_actor(CHAIN, namespace=s.namespace) if s.network == "sim" \
                    else None
                gateways = venue_gateways(s, chain, signing=False)
                tokens = TokenRegistry.for_network(s.network)
                rpc = chain_rpc(s, gateways)
                dispatcher = Dispatcher(
                    self._repo, self._fleet, per_worker=s.worker_concurrency,
                    open_orders=OpenOrders(s.max_open_orders, s.account_open_orders),
                    rate_limit=AccountRateLimit(s.account_orders_per_minute),
                    caps=amount_caps(s),
                    admission=latency_admission(s),
                    admission_wait_s=s.admission_wait_ms / 1000,
                    metrics=RayMetrics(),
                    market=VenueMarket(gateways, tokens, timeout_s=s.quote_timeout_s,
                                       mints=MintLookup(rpc, tokens) if rpc else None),
                    events=NotifierSink(ray.get_actor(NOTIFIER, namespace=s.namespace)),
                    watch_interval_s=s.price_watch_interval_ms / 1000,
                )
                await dispatcher.start()
                self._dispatcher = dispatcher
            return self._dispatcher

    async def start(self) -> dict[str, int]:
        return (await self._ready()).stats()

    @hot
    async def submit_many(self, news: list[NewOrder]) -> list[Submission | DexecError]:
        """Submit a batch (one statement); each answer is (order, created) or its error."""
        return await (await self._ready()).submit_many(news)

    async def stats(self) -> dict[str, int]:
        return (await self._ready()).stats()

    async def cancel(self, order_id: str, account_id: str) -> Order | DexecError:
        """Cancel the account's order; answer it cancelled, or why not (a typed error)."""
        try:
            return await (await self._ready()).cancel(order_id, account_id)
        except DexecError as exc:
            return exc

    async def last_trigger(self) -> dict[str, float | int]:
        """The latest price move that set resting orders off (for `dexec bench`)."""
        dispatcher = await self._ready()
        return dispatcher.last_trigger()

    async def worker_names(self) -> list[str]:
        await self._ready()
        return self._fleet.names()

    async def set_limits(self, max_open_orders: int, account_open_orders: int,
                         account_orders_per_minute: int,
                         admission_budget_ms: float | None = None,
                         admission_floor: int | None = None) -> None:
        """Change the admission limits at run time (a test hook); the latency admission
        starts measuring afresh when its budget or floor is given."""
        require_test_hooks(self._settings, "set_limits")
        s = self._settings
        fresh = None
        if admission_budget_ms is not None or admission_floor is not None:
            fresh = latency_admission(s.model_copy(update={
                "admission_budget_ms": (s.admission_budget_ms if admission_budget_ms is None
                                        else admission_budget_ms),
                "admission_floor": (s.admission_floor if admission_floor is None
                                    else admission_floor)}))
        (await self._ready()).set_limits(max_open_orders, account_open_orders,
                                         AccountRateLimit(account_orders_per_minute), fresh)

