"""The OrderManager's pool of ExecutionWorkers, and its link to each; plain and testable.

The Ray side (creating, killing and listing actors and nodes) comes in through
`WorkerPlacement`, each worker through `WorkerHandle`: actors.order_manager provides both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from actors.batching import Coalescer
from actors.telemetry import BatchStats
from core.errors import DexecError, WorkerLost, reason
from core.orders import Order

log = logging.getLogger(__name__)

# What a worker answers for one order: its final status (None: unknown order) or its error.
Outcome = str | None | DexecError
# An order handed over: its id, and the order as the manager stored it when it is fresh
# (None otherwise: the worker reads it when it takes the lease).
Handover = tuple[str, Order | None]


class FinishedOutcomes:
    """A worker's outcomes until the manager's long poll (`finished`) takes them.

    Outcomes finishing about together go back in one answer: each call costs the worker
    and the manager about a millisecond of CPU, and the manager needs an outcome only to
    free the order's place (its client has the status from the database and the Notifier).
    """

    def __init__(self, gather_s: float = 0.02) -> None:
        self._gather_s = gather_s
        self._outcomes: list[tuple[str, Outcome]] = []
        self._ready = asyncio.Event()

    def add(self, order_id: str, outcome: Outcome) -> None:
        self._outcomes.append((order_id, outcome))
        self._ready.set()

    async def take(self, timeout_s: float) -> list[tuple[str, Outcome]]:
        """Every outcome so far; with none yet, wait up to `timeout_s` for the first, then
        `gather_s` for those finishing with it."""
        if not self._outcomes:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._ready.wait()
            if self._outcomes:
                await asyncio.sleep(self._gather_s)
        outcomes, self._outcomes = self._outcomes, []
        return outcomes


def worker_name(index: int) -> str:
    """Return the name of the fixed pool's `index`th ExecutionWorker."""
    return f"ExecutionWorker-{index}"


def node_worker_name(node_id: str, index: int) -> str:
    """Return the name of a node's `index`th ExecutionWorker (workers_per_node > 0)."""
    return f"ExecutionWorker-{node_id[:8]}-{index}"


class WorkerHandle(Protocol):
    """One ExecutionWorker as the OrderManager calls it; both raise WorkerLost once it died."""

    async def accept(self, orders: list[Handover]) -> str:
        """Start executing the orders; return the worker's incarnation id."""
        ...

    async def finished(self, timeout_s: float) -> tuple[str, list[tuple[str, Outcome]]]:
        """Return (incarnation, outcomes since the last call), waiting up to `timeout_s`."""
        ...


class WorkerPlacement(Protocol):
    """Where workers come from and where they may run."""

    def spawn(self, name: str, node_id: str | None) -> WorkerHandle:
        """Create (or find) the named worker, pinned to `node_id` or spread (None)."""
        ...

    def retire(self, name: str) -> None:
        """Kill the named worker for good."""
        ...

    async def alive_nodes(self) -> set[str]: ...


class WorkerFleet:
    """The ExecutionWorkers, owned by the OrderManager (actors.dispatcher.WorkerPool).

    With `workers_per_node` = 0 it keeps `workers` of them spread over the cluster.
    Otherwise it keeps that many on every alive node: a node that joins gets workers, and
    the workers of a node that leaves are retired and their orders dispatched again.
    """

    def __init__(self, placement: WorkerPlacement, *, workers: int, workers_per_node: int,
                 window_s: float, stats: BatchStats | None = None) -> None:
        self._placement = placement
        self._workers = workers
        self._per_node = workers_per_node
        self._window = window_s
        self._stats = stats
        self._links: dict[str, WorkerLink] = {}
        self._home: dict[str, str] = {}  # worker name -> node id it is pinned to
        self._reconciling = asyncio.Lock()  # one reconcile at a time: it awaits the cluster

    def names(self) -> list[str]:
        return list(self._links)

    async def execute(self, name: str, order_id: str, stored: Order | None = None
                      ) -> str | None:
        """Have the named worker execute the order; raise WorkerLost if it is gone."""
        link = self._links.get(name)
        if link is None:
            raise WorkerLost(f"{name} was retired")
        return await link.execute(order_id, stored)

    async def reconcile(self) -> None:
        """Create missing workers and retire those whose node has left."""
        async with self._reconciling:
            if self._per_node <= 0:
                for i in range(self._workers):
                    if worker_name(i) not in self._links:
                        self._add(worker_name(i), None)
                return
            alive = await self._placement.alive_nodes()
            for node_id in alive:
                for k in range(self._per_node):
                    name = node_worker_name(node_id, k)
                    if name not in self._links:
                        self._add(name, node_id)
                        log.info("worker %s placed on node %s", name, node_id[:8])
            for name, node_id in list(self._home.items()):
                if node_id not in alive:
                    log.info("node %s left: retiring %s", node_id[:8], name)
                    self._retire(name)

    def _add(self, name: str, node_id: str | None) -> None:
        handle = self._placement.spawn(name, node_id)
        self._links[name] = WorkerLink(name, handle, self._window, self._stats)
        if node_id is not None:
            self._home[name] = node_id

    def _retire(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self._placement.retire(name)
        del self._home[name]
        self._links.pop(name).close(f"{name} was retired")


class WorkerLink:
    """The OrderManager's side of one worker: hand-overs and outcomes travel in batches.

    Orders handed over in the same window go in one `accept` call; one `finished` call is
    always outstanding and brings back every outcome since the last. When that call fails
    the worker died: every order it held is reported lost, to be dispatched again (the
    execution lease keeps a still-running one from being executed twice).
    """

    def __init__(self, name: str, handle: WorkerHandle, window_s: float,
                 stats: BatchStats | None = None, *, poll_s: float = 1.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._name = name
        self._h = handle
        self._poll_s = poll_s
        self._sleep = sleep
        self._waiting: dict[str, asyncio.Future[str | None]] = {}
        self._accepted_by: dict[str, str] = {}  # order id -> incarnation that accepted it
        self._accept: Coalescer[Handover, None] = Coalescer(
            self._accept_many, window_s=window_s, site="worker_accept", stats=stats)
        self._poller: asyncio.Task[None] | None = None
        self._closed: str | None = None

    async def execute(self, order_id: str, stored: Order | None = None) -> str | None:
        """Hand the order over (with `stored`, the fresh order as stored); return its
        outcome once the worker reports it."""
        if self._closed is not None:
            raise WorkerLost(self._closed)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._waiting[order_id] = future
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        try:
            await self._accept((order_id, stored))
            return await future
        finally:
            self._waiting.pop(order_id, None)
            self._accepted_by.pop(order_id, None)

    async def _accept_many(self, orders: list[Handover]) -> list[None]:
        incarnation = await self._h.accept(orders)
        for order_id, _ in orders:
            if order_id in self._waiting:
                self._accepted_by[order_id] = incarnation
        return [None] * len(orders)

    async def _poll(self) -> None:
        while self._waiting and self._closed is None:
            try:
                incarnation, outcomes = await self._h.finished(self._poll_s)
            except Exception as exc:
                # Dead, or its answer is lost with the call: either way the outcomes it
                # carried are gone. Dispatching again is safe (the lease and the order's
                # record decide), waiting forever is not.
                if isinstance(exc, WorkerLost):
                    self._lose(f"{self._name} died: {exc.message}")
                else:
                    log.warning("outcomes from %s lost: %s", self._name, reason(exc))
                    self._lose(f"outcomes from {self._name} lost: {reason(exc)}")
                await self._sleep(0.2)
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
        """Retire the link: every waiting order is lost, no new one is accepted."""
        self._closed = why
        self._lose(why)
