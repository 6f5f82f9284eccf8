"""The executor's store and leases over storage: concurrent calls share one statement."""

from __future__ import annotations

from datetime import datetime

from actors.batching import WINDOW_S, Coalescer
from actors.telemetry import BatchStats
from core.orders import Change, Order, OrderEvent
from core.quotes import SignedSwap, SwapStatus
from storage.locks import ExecutionLocks, Lease
from storage.repository import OrderRepository
from storage.writes import ApplyChange, SetSwapStatus, Write, Written


class BatchedStore:
    """actors.executor.OrderStore over a repository: concurrent writes share a statement.

    Status changes, swap records and swap statuses of every order a worker executes meet in
    one write batch per window; plain order reads meet in one query.
    """

    def __init__(self, repo: OrderRepository, *, window_s: float = WINDOW_S,
                 stats: BatchStats | None = None) -> None:
        self._repo = repo
        # A write statement costs about the same for one change as for fifty, and an
        # order's writes are its most frequent calls: they gather twice as long.
        self._writes: Coalescer[Write, Written] = Coalescer(
            repo.write_batch, window_s=2 * window_s, site="order_writes", stats=stats)
        self._reads: Coalescer[str, Order | None] = Coalescer(
            repo.get_orders, window_s=window_s, site="order_reads", stats=stats)

    async def get_order(self, order_id: str) -> Order | None:
        return await self._reads(order_id)

    async def events_since(self, order_id: str, since_seq: int) -> list[OrderEvent]:
        return await self._repo.events_since(order_id, since_seq)

    async def apply_change(
        self, order_id: str, change: Change, *, epoch: int | None, expected: Order,
        swap: SignedSwap | None = None, at: datetime | None = None, chained: bool = False,
    ) -> tuple[Order, OrderEvent] | None:
        return await self._writes(ApplyChange(order_id, change, epoch, expected, swap, at,
                                              chained))

    async def set_swap_status(self, signature: str, status: SwapStatus) -> None:
        await self._writes(SetSwapStatus(signature, status))

    async def swaps_for_order(self, order_id: str
                              ) -> list[tuple[SignedSwap, int, SwapStatus]]:
        return await self._repo.swaps_for_order(order_id)


class BatchedLeases:
    """Lease many orders with one statement (see ExecutionLocks.try_acquire_many)."""

    def __init__(self, locks: ExecutionLocks, *, window_s: float = WINDOW_S,
                 stats: BatchStats | None = None) -> None:
        self._acquire: Coalescer[str, Lease | None] = Coalescer(
            locks.try_acquire_many, window_s=window_s, site="leases", stats=stats)

    async def try_acquire(self, order_id: str) -> Lease | None:
        return await self._acquire(order_id)
