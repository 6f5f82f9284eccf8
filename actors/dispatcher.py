"""The OrderManager's core: persist submissions, queue them, dispatch with bounded concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Protocol

from actors.executor import BUSY
from actors.telemetry import Metrics, NullMetrics, order_log
from core.errors import DexecError, LimitExceeded, Overloaded, WorkerLost, reason
from core.limits import AccountRateLimit, AmountCaps, LatencyAdmission, OpenOrders
from core.orders import NewOrder, Order, Submission

log = logging.getLogger(__name__)


class SubmissionStore(Protocol):
    """Where orders are created (storage.repository.OrderRepository)."""

    async def create_orders(self, news: list[NewOrder]) -> list[Submission | DexecError]:
        """Answer each with (order, created) or its own DexecError."""
        ...

    async def open_orders(self) -> list[tuple[str, str]]:
        """Every non-terminal order as (order_id, account_id), oldest first."""
        ...

    async def find_by_client_id(self, account_id: str, client_order_id: str) -> Order | None: ...

    async def sold_since(self, since: datetime) -> dict[str, int]:
        """Amounts of orders created since `since` that have not failed (no dry runs), by
        input mint."""
        ...


class WorkerPool(Protocol):
    """The execution workers by name; the set may change while orders flow (nodes come, go).

    actors.worker_fleet.WorkerFleet in the OrderManager.
    """

    def names(self) -> list[str]: ...

    async def execute(self, name: str, order_id: str) -> str | None: ...


class Dispatcher:
    """Own the queue of accepted orders and keep at most `capacity` of them executing."""

    def __init__(
        self,
        store: SubmissionStore,
        workers: WorkerPool,
        *,
        per_worker: int,
        redispatch_delay_s: float = 0.5,
        open_orders: OpenOrders | None = None,
        rate_limit: AccountRateLimit | None = None,
        caps: AmountCaps | None = None,
        admission: LatencyAdmission | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._metrics: Metrics = metrics or NullMetrics()
        self._open = open_orders if open_orders is not None else OpenOrders()
        self._rate = rate_limit or AccountRateLimit(0)
        self._caps = caps if caps is not None else AmountCaps()
        self._admission = admission if admission is not None else LatencyAdmission(0)
        self._clock = clock
        self._admitted_at: dict[str, float] = {}  # order id -> when this run accepted it
        self._workers = workers
        self._per_worker = per_worker
        self._redispatch_delay = redispatch_delay_s
        self._queue: deque[str] = deque()
        self._known: set[str] = set()  # queued or executing: never dispatched twice at once
        self._in_flight: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    @property
    def capacity(self) -> int:
        return len(self._workers.names()) * self._per_worker

    @property
    def executing(self) -> int:
        return sum(self._in_flight.values())

    async def start(self) -> int:
        """Queue every order left open by a previous run and start dispatching."""
        if self._caps.per_day:
            self._caps.load(await self._store.sold_since(
                AmountCaps.day_start(datetime.now(UTC))))
        open_ids = await self._store.open_orders()
        for order_id, account_id in open_ids:
            self._open.adopt(order_id, account_id)
            self.enqueue(order_id)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        if open_ids:
            log.info("resuming %d open orders", len(open_ids))
        return len(open_ids)

    async def submit_many(self, news: list[NewOrder]) -> list[Submission | DexecError]:
        """Persist new orders (idempotent by client_order_id) in one statement, queue them.

        Each answer is (order, created) or that item's DexecError. Admission is decided
        item by item, in order, before anything is stored: AtCapacity when the engine
        already holds more orders than it finishes in time (LatencyAdmission), Overloaded
        when an open-order bound (in all, or the account's) or the account's rate limit is
        reached, though a repeat of an already stored order is still answered with it.
        """
        answers: dict[int, Submission | DexecError] = {}
        admitted: list[int] = []
        days: dict[int, date] = {}  # the day each admitted order's cap reservation counts on
        for k, new in enumerate(news):
            # Reserve the place and the rate before the first await, so a concurrent burst
            # cannot pass the checks together; a repeat of a stored order gives both back.
            try:
                self._admission.check(len(self._open))
                self._open.reserve(new.account_id)
            except Overloaded as exc:
                answers[k] = exc
                continue
            try:
                self._rate.check(new.account_id)
                if not new.dry_run:  # a dry run sells nothing: no cap applies
                    self._caps.check_order(new.input_mint, new.amount_in)
                    days[k] = self._caps.reserve(new.input_mint, new.amount_in)
            except (Overloaded, LimitExceeded) as exc:
                self._open.release(new.account_id)
                answers[k] = exc
                continue
            self._rate.record(new.account_id)
            admitted.append(k)
        try:
            results = await self._store.create_orders([news[k] for k in admitted]) \
                if admitted else []
        except BaseException:
            for k in admitted:
                self._rate.forget(news[k].account_id)
                self._open.release(news[k].account_id)
                self._unreserve(news[k], days.get(k))
            raise
        for k, result in zip(admitted, results, strict=True):
            answers[k] = result
            if isinstance(result, DexecError) or not result[1]:
                self._rate.forget(news[k].account_id)
                self._open.release(news[k].account_id)
                self._unreserve(news[k], days.get(k))
                continue
            self._open.hold(result[0].order_id, news[k].account_id)
            self._admitted_at.setdefault(result[0].order_id, self._clock())
            if k in days:
                self._caps.hold(result[0].order_id, news[k].input_mint, news[k].amount_in,
                                days[k])
            self._metrics.order_submitted(str(news[k].order_type))
            self.enqueue(result[0].order_id)
        for k, answer in answers.items():
            new = news[k]
            if isinstance(answer, Overloaded | LimitExceeded) and new.client_order_id is not None:
                # Refused for load, but a repeat of a stored order is answered all the same.
                existing = await self._store.find_by_client_id(new.account_id,
                                                               new.client_order_id)
                if existing is not None and new.same_request(existing):
                    answers[k] = (existing, False)
        return [answers[k] for k in range(len(news))]

    def _unreserve(self, new: NewOrder, day: date | None) -> None:
        if day is not None:
            self._caps.release(new.input_mint, new.amount_in, day)

    def set_limits(self, max_open_orders: int, account_open_orders: int,
                   rate_limit: AccountRateLimit,
                   admission: LatencyAdmission | None = None) -> None:
        self._open.bound = max_open_orders
        self._open.per_account = account_open_orders
        self._rate = rate_limit
        if admission is not None:
            self._admission = admission

    def enqueue(self, order_id: str) -> None:
        if order_id in self._known:
            return
        self._known.add(order_id)
        self._queue.append(order_id)
        self._wake.set()

    def stats(self) -> dict[str, int]:
        return {
            "queued": len(self._queue),
            "executing": self.executing,
            "capacity": self.capacity,
            "open": len(self._open),
            "admission_bound": self._admission.bound() or 0,
        }

    async def _loop(self) -> None:
        reported = 0.0
        while True:
            if time.monotonic() - reported >= 0.5:  # a gauge, not an event: twice a second
                reported = time.monotonic()
                self._metrics.queue(len(self._queue), self.executing)
            names = self._workers.names()
            if not self._queue or not names or self.executing >= self.capacity:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    # Also wake now and then: workers may have joined the pool.
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
                continue
            order_id = self._queue.popleft()
            name = min(names, key=lambda n: self._in_flight.get(n, 0))
            self._in_flight[name] = self._in_flight.get(name, 0) + 1
            task = asyncio.get_running_loop().create_task(self._run(name, order_id))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, name: str, order_id: str) -> None:
        retry = False
        status: str | None = None
        try:
            status = await self._workers.execute(name, order_id)
            retry = status == BUSY
            if status == "failed":
                self._caps.failed(order_id)  # nothing was sold: the day's cap gets it back
            elif status in ("confirmed", "simulated"):
                self._caps.finished(order_id)
        except WorkerLost as exc:
            order_log(order_id).warning(
                "order %s: worker %s lost (%s); dispatching again", order_id, name, reason(exc)
            )
            retry = True
        except DexecError as exc:  # e.g. the database is down: the record decides later
            order_log(order_id).warning(
                "order %s: interrupted (%s); dispatching again", order_id, reason(exc)
            )
            retry = True
        except Exception:
            order_log(order_id).exception("order %s: execution raised; dispatching again",
                                          order_id)
            retry = True
        finally:
            self._in_flight[name] -= 1
            if not self._in_flight[name]:
                del self._in_flight[name]
            self._known.discard(order_id)
            if not retry:
                self._open.close(order_id)
                started = self._admitted_at.pop(order_id, None)
                succeeded = status in ("confirmed", "simulated")
                self._admission.finished(self._clock() - started
                                         if started is not None and succeeded else None)
            self._wake.set()
        if retry:
            await asyncio.sleep(self._redispatch_delay)
            self.enqueue(order_id)
