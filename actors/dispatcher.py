"""The OrderManager's core: persist submissions, queue them, dispatch with bounded concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Protocol

from actors.executor import BUSY, EventSink
from actors.price_watcher import Market, PriceWatcher
from actors.telemetry import Metrics, NullMetrics, order_log
from core.errors import (
    DexecError,
    ErrorClass,
    InvalidInput,
    LimitExceeded,
    NotCancellable,
    OrderNotFound,
    Overloaded,
    RetryableError,
    WorkerLost,
    reason,
)
from core.limits import AccountRateLimit, AmountCaps, LatencyAdmission, OpenOrders
from core.orders import (
    CANCELLABLE,
    TERMINAL,
    Change,
    NewOrder,
    Order,
    OrderStatus,
    Submission,
    Trigger,
)
from storage.writes import ApplyChange, Write, Written

log = logging.getLogger(__name__)

# An order whose execution took its worker down this many times in a row is failed, if
# nothing of it was signed: one that crashes its worker must not crash the fleet forever.
MAX_WORKER_LOSSES = 5

# Final statuses in which the order's amount was sold (a dry run's, as far as it goes).
SOLD = frozenset({OrderStatus.CONFIRMED, OrderStatus.SIMULATED})


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

    async def resting_orders(self) -> list[Order]:
        """Orders that wait for a price: open ones, and limit and stop orders not yet open."""
        ...

    async def write_batch(self, ops: Sequence[Write]) -> list[Written | DexecError]: ...

    async def get_orders(self, order_ids: Sequence[str]) -> list[Order | None]: ...

    async def get_order(self, order_id: str) -> Order | None: ...


class _NoEvents:
    def publish(self, event: object) -> None:
        return None


class WorkerPool(Protocol):
    """The execution workers by name; the set may change while orders flow (nodes come, go).

    actors.worker_fleet.WorkerFleet in the OrderManager.
    """

    def names(self) -> list[str]: ...

    async def execute(self, name: str, order_id: str, stored: Order | None = None
                      ) -> str | None:
        """Have the named worker execute the order. `stored`: the order as this manager
        stored it, when it is fresh (the worker may quote it while it takes the lease)."""
        ...


class Dispatcher:
    """Own the queue of accepted orders and keep at most `capacity` of them executing."""

    def __init__(
        self,
        store: SubmissionStore,
        workers: WorkerPool,
        *,
        per_worker: int,
        redispatch_delay_s: float = 0.5,
        max_worker_losses: int = MAX_WORKER_LOSSES,
        open_orders: OpenOrders | None = None,
        rate_limit: AccountRateLimit | None = None,
        caps: AmountCaps | None = None,
        admission: LatencyAdmission | None = None,
        admission_wait_s: float = 0.0,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        market: Market | None = None,
        events: EventSink | None = None,
        watch_interval_s: float = 0.5,
        wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._events: EventSink = events or _NoEvents()
        # Limit and stop orders rest in the watcher until their price comes (no market: the
        # engine takes market orders only).
        self._watcher = PriceWatcher(
            store, market, self._events, interval_s=watch_interval_s,
            on_triggered=self._triggered, on_closed=self._closed,
            now=wall_clock or (lambda: datetime.now(UTC)),
        ) if market is not None else None
        self._watch_task: asyncio.Task[None] | None = None
        self._metrics: Metrics = metrics or NullMetrics()
        self._open = open_orders if open_orders is not None else OpenOrders()
        self._rate = rate_limit or AccountRateLimit(0)
        self._caps = caps if caps is not None else AmountCaps()
        self._admission = admission if admission is not None else LatencyAdmission(0)
        self._admission_wait = admission_wait_s
        self._room = asyncio.Event()  # set (and replaced) whenever an order leaves flight
        self._clock = clock
        self._admitted_at: dict[str, float] = {}  # order id -> when this run accepted it
        self._workers = workers
        self._per_worker = per_worker
        self._redispatch_delay = redispatch_delay_s
        self._max_losses = max_worker_losses
        self._losses: dict[str, int] = {}  # order id -> workers lost executing it, in a row
        self._queue: deque[str] = deque()
        self._known: set[str] = set()  # queued or executing: never dispatched twice at once
        # order id -> the order as created here, until its first dispatch hands it over
        self._fresh: dict[str, Order] = {}
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
        resting = await self._store.resting_orders() if self._watcher is not None else []
        waiting = {o.order_id for o in resting}
        for order_id, account_id in open_ids:
            self._open.adopt(order_id, account_id)
            if order_id not in waiting:
                self.enqueue(order_id)
        if self._watcher is not None:
            today = datetime.now(UTC).date()
            for order in resting:  # adopted above, with every other open order
                if (self._caps.per_day and not order.dry_run
                        and order.created_at.astimezone(UTC).date() == today):
                    # Counted in today's total above: held, so a cancel or expiry gives it back.
                    self._caps.hold(order.order_id, order.input_mint, order.amount_in, today)
                # Expiry is checked before any price: an order whose time ran out while
                # the engine was down is expired, never executed late.
                self._watcher.follow(order)
            if self._watch_task is None:
                self._watch_task = asyncio.get_running_loop().create_task(self._watcher.run())
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
        loop = asyncio.get_running_loop()
        wait_until = loop.time() + self._admission_wait
        for k, new in enumerate(news):
            if new.rests and self._watcher is None:
                answers[k] = InvalidInput("this engine takes market orders only")
                continue
            if not new.rests:  # a resting order is no work in flight until its price
                await self._room_for_one(wait_until)
            # Reserve the place and the rate before the next await, so a concurrent burst
            # cannot pass the checks together; a repeat of a stored order gives both back.
            try:
                if not new.rests:
                    self._admission.check(self._working)
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
            order = result[0]
            self._open.hold(order.order_id, news[k].account_id)
            if k in days:
                self._caps.hold(order.order_id, news[k].input_mint, news[k].amount_in,
                                days[k])
            self._metrics.order_submitted(str(news[k].order_type))
            if order.rests and self._watcher is not None:
                self._watcher.submit(order)
            else:
                if order.status is OrderStatus.PENDING:
                    self._fresh[order.order_id] = order
                self._triggered(order)
        for k, answer in answers.items():
            new = news[k]
            if isinstance(answer, Overloaded | LimitExceeded) and new.client_order_id is not None:
                # Refused for load, but a repeat of a stored order is answered all the same.
                existing = await self._store.find_by_client_id(new.account_id,
                                                               new.client_order_id)
                if existing is not None and new.same_request(existing):
                    answers[k] = (existing, False)
        return [answers[k] for k in range(len(news))]

    @property
    def resting(self) -> int:
        """Orders waiting for their price: open, but no work in flight."""
        return len(self._watcher) if self._watcher is not None else 0

    @property
    def _working(self) -> int:
        """Orders in flight for the latency admission: open, and not resting."""
        return len(self._open) - self.resting

    def last_trigger(self) -> dict[str, float | int]:
        return dict(self._watcher.last_trigger) if self._watcher is not None else {}

    def _triggered(self, order: Order) -> None:
        """An order to execute now: new, or set off by its price."""
        self._admitted_at.setdefault(order.order_id, self._clock())
        self.enqueue(order.order_id)

    def _closed(self, order: Order) -> None:
        """An order ended outside an execution (cancelled, expired): free what it held.
        Safe to repeat."""
        if self._watcher is not None:
            self._watcher.closed(order.order_id)
        if self._free_place(order.order_id):  # counted once, however often it is repeated
            self._metrics.order_finished(str(order.status), order.venue or "none",
                                         (order.updated_at - order.created_at).total_seconds())
        self._admitted_at.pop(order.order_id, None)
        self._settle_caps(order.order_id, order.status)

    def _settle_caps(self, order_id: str, status: str | None) -> None:
        """A final status settles the order's share of the day's caps: kept if it sold,
        given back if nothing was sold (failed, cancelled, expired)."""
        if status in SOLD:
            self._caps.finished(order_id)
        elif status in TERMINAL:
            self._caps.failed(order_id)

    async def cancel(self, order_id: str, account_id: str) -> Order:
        """Cancel the account's order if nothing of it can land yet; return it cancelled.

        A cancel is a conditional write like every other change: it wins or loses against a
        trigger or an executor's next step by the order's seq, so exactly one of them is
        recorded. A cancelled order answers again as it is (a repeat is harmless).
        """
        taken_out = False  # out of the watcher: it must be followed again unless cancelled
        try:
            for _ in range(8):
                (order,) = await self._store.get_orders([order_id])
                if order is None or order.account_id != account_id:
                    raise OrderNotFound(f"order {order_id} not found")
                if order.status is OrderStatus.CANCELLED:
                    self._closed(order)  # cancelled before, perhaps by a call that failed
                    taken_out = False
                    return order
                if order.status not in CANCELLABLE:
                    raise NotCancellable(_why_not_cancellable(order))
                # Out of the book first, so that no price sets it off while this is written.
                if self._watcher is not None and self._watcher.remove(order_id) is not None:
                    taken_out = True
                (answer,) = await self._store.write_batch([ApplyChange(
                    order_id, Change(Trigger.CANCEL, order.attempt,
                                     error="cancelled by its owner"), None, order)])
                if isinstance(answer, tuple):
                    updated, event = answer
                    self._events.publish(event)
                    self._closed(updated)
                    taken_out = False
                    return updated
                # It moved meanwhile (set off, rested, executed a step): look again.
            raise RetryableError(f"order {order_id} kept changing while it was being"
                                 " cancelled; try again")
        finally:
            if taken_out:
                self._rest_again(order_id)  # read it again and follow it where it is

    async def _room_for_one(self, until: float) -> None:
        """Wait, until the loop's time `until` at the latest, for the latency admission to
        take one more order; return at once when it would (the caller checks again).

        Past its bound the engine would refuse a submission after the ingress has parsed,
        authenticated and sent it, which at a flood costs more than the orders it executes.
        Waiting a little instead keeps the ingress's places taken, so the front's bounded
        queue refuses the rest in HAProxy; and the order that finishes meanwhile makes room.
        """
        loop = asyncio.get_running_loop()
        while not self._admission.admits(self._working):
            left = until - loop.time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._room.wait()

    def _free_place(self, order_id: str) -> bool:
        """The order is no longer open: free its place and wake the submissions waiting for
        room. False: it was not open (a repeat)."""
        if not self._open.close(order_id):
            return False
        self._room.set()
        self._room = asyncio.Event()
        return True

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
            "resting": self.resting,
            "price_quotes": self._watcher.quotes if self._watcher is not None else 0,
        }

    async def _loop(self) -> None:
        reported = 0.0
        while True:
            if time.monotonic() - reported >= 0.5:  # a gauge, not an event: twice a second
                reported = time.monotonic()
                self._metrics.queue(len(self._queue), self.executing, self.resting)
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
            task = asyncio.get_running_loop().create_task(
                self._run(name, order_id, self._fresh.pop(order_id, None)))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, name: str, order_id: str, stored: Order | None) -> None:
        retry = False
        status: str | None = None
        losses = 0
        try:
            status = await self._workers.execute(name, order_id, stored)
            self._losses.pop(order_id, None)
            retry = status == BUSY
            self._settle_caps(order_id, status)
        except WorkerLost as exc:
            losses = self._losses[order_id] = self._losses.get(order_id, 0) + 1
            order_log(order_id).warning(
                "order %s: worker %s lost (%s; %d in a row); dispatching again", order_id, name,
                reason(exc), losses)
            retry = True
            if self._max_losses and losses >= self._max_losses:
                failed = await self._fail_poisonous(order_id, losses)
                if failed is not None:
                    status, retry = str(failed.status), False
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
            if status == "open" and self._watcher is not None:
                # Its price was gone by the time its own amount was quoted: it rests again,
                # still open (no order finished: the admission's rate is not told).
                self._admitted_at.pop(order_id, None)
                self._rest_again(order_id)
            elif not retry:
                self._free_place(order_id)
                if self._watcher is not None and status is not None:
                    self._watcher.closed(order_id)
                started = self._admitted_at.pop(order_id, None)
                succeeded = status in SOLD
                self._admission.finished(self._clock() - started
                                         if started is not None and succeeded else None)
            self._wake.set()
        if retry:
            # After a lost worker, back off: an order that takes its worker down with it
            # (a poison order) must not take the fleet down in a loop, and the orders that
            # died beside it finish before it runs again.
            await asyncio.sleep(self._redispatch_delay * min(2 ** max(losses - 1, 0), 60))
            self.enqueue(order_id)

    async def _fail_poisonous(self, order_id: str, losses: int) -> Order | None:
        """Fail an order whose execution took its worker down `losses` times in a row, if
        nothing of it can land (pending or routing: nothing signed); return it failed. None:
        it stays (a signed transaction may land, it moved meanwhile, or the write failed)
        and is dispatched again, after a back-off that keeps doubling (to 60 times the first)."""
        try:
            (order,) = await self._store.get_orders([order_id])
            if order is None or order.status not in (OrderStatus.PENDING, OrderStatus.ROUTING):
                return None
            (answer,) = await self._store.write_batch([ApplyChange(order_id, Change(
                Trigger.FAIL, order.attempt, error_class=str(ErrorClass.TERMINAL),
                error=f"its execution was lost with its worker {losses} times in a row;"
                      " failed with nothing sent"), None, order)])
        except Exception as exc:  # the record decides on the next dispatch
            order_log(order_id).warning("order %s: could not be failed (%s)", order_id,
                                        reason(exc))
            return None
        if not isinstance(answer, tuple):
            return None  # it moved meanwhile: dispatched again, read anew
        failed, event = answer
        order_log(order_id).error("order %s: failed after its execution was lost with its"
                                  " worker %d times in a row", order_id, losses)
        self._losses.pop(order_id, None)
        self._events.publish(event)
        self._closed(failed)
        return failed

    def _rest_again(self, order_id: str) -> None:
        async def rest() -> None:
            assert self._watcher is not None  # noqa: S101 - only called with one
            try:
                await self._watcher.rest_again(order_id)
            except Exception as exc:  # read it again later: dispatching reads it anew
                order_log(order_id).warning("order %s: could not rest again (%s)", order_id,
                                            reason(exc))
                await asyncio.sleep(self._redispatch_delay)
                self.enqueue(order_id)

        task = asyncio.get_running_loop().create_task(rest())
        self._running.add(task)
        task.add_done_callback(self._running.discard)


def _why_not_cancellable(order: Order) -> str:
    if order.status in (OrderStatus.BUILDING, OrderStatus.SUBMITTED):
        return (f"order {order.order_id} is {order.status}: its signed transaction may still"
                " land, so it cannot be cancelled; it finishes normally")
    return f"order {order.order_id} is already {order.status}"
