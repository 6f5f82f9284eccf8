"""Fakes of the Dispatcher's ports: its store of submissions and its worker pool."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from core.errors import DexecError, IdempotencyConflict
from core.orders import NewOrder, Order, OrderStatus, Submission
from storage.writes import Write, Written
from tests.kit.market import write_conditionally
from tests.kit.orders import T0, created_order

if TYPE_CHECKING:
    from actors.dispatcher import Dispatcher


class FakeSubmissions:
    """A SubmissionStore: idempotent by client_order_id, like the repository."""

    def __init__(self, open_ids: Iterable[str] = ()) -> None:
        self.open_ids = list(open_ids)
        self.orders: dict[str, Order] = {}
        self._by_client: dict[str, str] = {}
        self.queued_while_persisting: list[int] = []
        self.dispatcher: Dispatcher | None = None
        self.sold_today: dict[str, int] = {}

    async def create_orders(self, news: list[NewOrder]) -> list[Submission | DexecError]:
        if self.dispatcher is not None:
            self.queued_while_persisting.append(self.dispatcher.stats()["queued"])
        await asyncio.sleep(0)  # a database round trip
        return [self._create(new) for new in news]

    def _create(self, new: NewOrder) -> Submission | DexecError:
        if new.client_order_id in self._by_client:
            existing = self.orders[self._by_client[new.client_order_id]]
            if not new.same_request(existing):
                return IdempotencyConflict("client_order_id reused for a different order")
            return existing, False
        order = created_order(f"order-{len(self.orders) + 1}", new)
        self.orders[order.order_id] = order
        if new.client_order_id is not None:
            self._by_client[new.client_order_id] = order.order_id
        return order, True

    async def open_orders(self) -> list[tuple[str, str]]:
        return [(order_id, "default") for order_id in self.open_ids]

    async def sold_since(self, since: datetime) -> dict[str, int]:
        return dict(self.sold_today)

    async def find_by_client_id(self, account_id: str, client_order_id: str) -> Order | None:
        order_id = self._by_client.get(client_order_id)
        return self.orders[order_id] if order_id is not None else None


class FakeWorkers:
    """A WorkerPool that records concurrency; executions wait for `gate` when it is closed."""

    def __init__(self, size: int) -> None:
        self._size = size
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.per_index = [0] * size
        self.max_per_index = [0] * size
        self.running: Counter[str] = Counter()
        self.overlaps: list[str] = []
        self.started: list[str] = []
        self.finished: list[str] = []
        self.failures: dict[str, list[BaseException]] = {}  # raised by the next executions
        self.outcomes: dict[str, str] = {}  # the status an execution answers (else None)
        # order id -> what each of its hand-overs carried (the fresh order, or None)
        self.handed: dict[str, list[Order | None]] = {}

    def names(self) -> list[str]:
        return [f"w{i}" for i in range(self._size)]

    async def execute(self, name: str, order_id: str, stored: Order | None = None
                      ) -> str | None:
        index = int(name[1:])
        self.handed.setdefault(order_id, []).append(stored)
        assert 0 <= index < self._size
        self.started.append(order_id)
        if self.running[order_id]:
            self.overlaps.append(order_id)
        self.running[order_id] += 1
        self.in_flight += 1
        self.per_index[index] += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_per_index[index] = max(self.max_per_index[index], self.per_index[index])
        try:
            await asyncio.sleep(0)
            await self.gate.wait()
            await asyncio.sleep(0)
            failures = self.failures.get(order_id)
            if failures:
                raise failures.pop(0)
            self.finished.append(order_id)
            return self.outcomes.get(order_id)
        finally:
            self.running[order_id] -= 1
            self.in_flight -= 1
            self.per_index[index] -= 1


class FakeStore(FakeSubmissions):
    """FakeSubmissions plus conditional writes by seq and the resting orders' reads."""

    async def write_batch(self, ops: Sequence[Write]) -> list[Written | DexecError]:
        return write_conditionally(self.orders, ops, T0)

    async def get_orders(self, order_ids: Sequence[str]) -> list[Order | None]:
        return [self.orders.get(i) for i in order_ids]

    async def get_order(self, order_id: str) -> Order | None:
        return self.orders.get(order_id)

    async def resting_orders(self) -> list[Order]:
        return [o for o in self.orders.values()
                if o.status is OrderStatus.OPEN or (o.status is OrderStatus.PENDING and o.rests)]

    async def open_orders(self) -> list[tuple[str, str]]:
        return [(o.order_id, o.account_id) for o in self.orders.values() if not o.is_terminal]
