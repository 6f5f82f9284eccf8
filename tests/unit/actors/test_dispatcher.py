"""Unit tests for the Dispatcher: persist, queue, bounded concurrency, re-dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from actors.dispatcher import Dispatcher
from core.errors import (
    AtCapacity,
    DexecError,
    IdempotencyConflict,
    LimitExceeded,
    Overloaded,
    WorkerLost,
)
from core.limits import AmountCaps, LatencyAdmission, OpenOrders
from core.orders import NewOrder, Order, OrderStatus, Submission
from tests.kit.dispatch import FakeStore, FakeSubmissions, FakeWorkers
from tests.kit.loop import settle, until
from tests.kit.market import Events
from tests.kit.orders import new_order


def counts(dispatcher: Dispatcher) -> dict[str, int]:
    stats = dispatcher.stats()
    return {key: stats[key] for key in ("queued", "executing", "capacity")}


async def submit(dispatcher: Dispatcher, new: NewOrder) -> Submission:
    """Submit one order; raise its DexecError if it was refused."""
    (answer,) = await dispatcher.submit_many([new])
    if isinstance(answer, DexecError):
        raise answer
    return answer


MakeDispatcher = Callable[..., Dispatcher]


@pytest.fixture
async def make_dispatcher() -> AsyncIterator[MakeDispatcher]:
    made: list[Dispatcher] = []

    def make(store: FakeSubmissions, workers: FakeWorkers, *, per_worker: int = 2,
             redispatch_delay_s: float = 0.0, open_orders: OpenOrders | None = None,
             caps: AmountCaps | None = None,
             admission: LatencyAdmission | None = None,
             clock: Callable[[], float] = time.monotonic, **options: Any) -> Dispatcher:
        dispatcher = Dispatcher(store, workers, per_worker=per_worker,
                                redispatch_delay_s=redispatch_delay_s, open_orders=open_orders,
                                caps=caps, admission=admission, clock=clock, **options)
        store.dispatcher = dispatcher
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        # The dispatch loop runs for the actor's lifetime; stop it with the test.
        task = dispatcher._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- submit ---------------------------------------------------------------------------------


async def test_submit_persists_then_enqueues(make_dispatcher: MakeDispatcher) -> None:
    store, workers = FakeSubmissions(), FakeWorkers(2)
    dispatcher = make_dispatcher(store, workers)

    order, created = await submit(dispatcher, new_order("c-1"))

    assert created
    assert store.orders == {order.order_id: order}
    assert store.queued_while_persisting == [0]  # not queued before it was stored
    assert counts(dispatcher) == {"queued": 1, "executing": 0, "capacity": 4}
    assert workers.started == []  # nothing runs before start()

    await dispatcher.start()
    await until(lambda: workers.finished == [order.order_id])
    assert dispatcher.stats()["queued"] == 0


async def test_a_duplicate_submission_is_not_enqueued(make_dispatcher: MakeDispatcher) -> None:
    store, workers = FakeSubmissions(), FakeWorkers(1)
    dispatcher = make_dispatcher(store, workers)

    first, created = await submit(dispatcher, new_order("c-1"))
    again, created_again = await submit(dispatcher, new_order("c-1"))

    assert created and not created_again
    assert again == first
    assert dispatcher.stats()["queued"] == 1
    await dispatcher.start()
    await until(lambda: bool(workers.finished))
    await settle()
    assert workers.started == [first.order_id]

    # A client retrying after the order finished gets it back; it does not run again.
    late, created_late = await submit(dispatcher, new_order("c-1"))
    await settle()
    assert not created_late and late == first
    assert workers.started == [first.order_id]
    assert dispatcher.stats()["queued"] == 0


async def test_a_failed_submission_is_not_enqueued(make_dispatcher: MakeDispatcher) -> None:
    store, workers = FakeSubmissions(), FakeWorkers(1)
    dispatcher = make_dispatcher(store, workers)
    await submit(dispatcher, new_order("c-1"))

    with pytest.raises(IdempotencyConflict):
        await submit(dispatcher, new_order("c-1", amount_in=5))

    assert dispatcher.stats()["queued"] == 1
    assert len(store.orders) == 1


# --- bounded concurrency --------------------------------------------------------------------


async def test_concurrency_never_exceeds_workers_times_per_worker(
    make_dispatcher: MakeDispatcher,
) -> None:
    store, workers = FakeSubmissions(), FakeWorkers(2)
    dispatcher = make_dispatcher(store, workers, per_worker=3)
    ids = []
    for _ in range(20):
        order, _ = await submit(dispatcher, new_order())
        ids.append(order.order_id)
    workers.gate.clear()

    await dispatcher.start()
    await until(lambda: workers.in_flight == 6)
    await settle()

    # Saturated: exactly the capacity runs, spread evenly, and the rest waits in the queue.
    assert workers.in_flight == 6
    assert workers.per_index == [3, 3]
    assert counts(dispatcher) == {"queued": 14, "executing": 6, "capacity": 6}

    workers.gate.set()
    await until(lambda: len(workers.finished) == 20)
    assert workers.max_in_flight == 6
    assert workers.max_per_index == [3, 3]
    assert sorted(workers.started) == sorted(ids)
    assert workers.started[:6] == ids[:6]  # first in, first dispatched
    await settle()
    assert counts(dispatcher) == {"queued": 0, "executing": 0, "capacity": 6}


async def test_orders_submitted_while_running_are_picked_up(
    make_dispatcher: MakeDispatcher,
) -> None:
    store, workers = FakeSubmissions(), FakeWorkers(3)
    dispatcher = make_dispatcher(store, workers, per_worker=1)
    await dispatcher.start()

    for _ in range(10):
        await submit(dispatcher, new_order())
        await asyncio.sleep(0)
    await until(lambda: len(workers.finished) == 10)

    assert 1 <= workers.max_in_flight <= 3
    assert max(workers.max_per_index) == 1


# --- restart and re-dispatch ----------------------------------------------------------------


async def test_start_requeues_open_orders(make_dispatcher: MakeDispatcher) -> None:
    store = FakeSubmissions(open_ids=["left-1", "left-2", "left-3"])
    workers = FakeWorkers(2)
    dispatcher = make_dispatcher(store, workers, per_worker=1)

    assert await dispatcher.start() == 3

    await until(lambda: len(workers.finished) == 3)
    assert workers.started == ["left-1", "left-2", "left-3"]


async def test_start_twice_does_not_run_an_order_twice(make_dispatcher: MakeDispatcher) -> None:
    store, workers = FakeSubmissions(open_ids=["left-1"]), FakeWorkers(2)
    dispatcher = make_dispatcher(store, workers)
    workers.gate.clear()

    await dispatcher.start()
    await until(lambda: workers.in_flight == 1)
    await dispatcher.start()  # e.g. the manager's start-up ran again
    await settle()
    workers.gate.set()
    await until(lambda: workers.finished == ["left-1"])
    await settle()

    assert workers.started == ["left-1"]


@pytest.mark.parametrize("failure", [WorkerLost("actor died"), RuntimeError("bug")],
                         ids=["worker-lost", "unexpected"])
async def test_a_lost_execution_is_dispatched_again(
    make_dispatcher: MakeDispatcher, failure: BaseException
) -> None:
    store, workers = FakeSubmissions(), FakeWorkers(2)
    dispatcher = make_dispatcher(store, workers)
    order, _ = await submit(dispatcher, new_order())
    workers.failures[order.order_id] = [failure]

    await dispatcher.start()
    await until(lambda: workers.finished == [order.order_id])

    assert workers.started == [order.order_id, order.order_id]
    assert workers.overlaps == []
    await settle()
    assert counts(dispatcher) == {"queued": 0, "executing": 0, "capacity": 4}


async def test_a_fresh_order_is_handed_over_as_stored_once_and_by_id_when_dispatched_again(
    make_dispatcher: MakeDispatcher,
) -> None:
    store, workers = FakeSubmissions(open_ids=["left-1"]), FakeWorkers(2)
    dispatcher = make_dispatcher(store, workers)
    order, _ = await submit(dispatcher, new_order())
    workers.failures[order.order_id] = [WorkerLost("actor died")]

    await dispatcher.start()
    await until(lambda: sorted(workers.finished) == sorted([order.order_id, "left-1"]))

    # The worker may quote a fresh order while it takes the lease; once dispatched, the
    # order may have moved on, so a later hand-over (and a resumed order's) carries its id.
    assert workers.handed[order.order_id] == [order, None]
    assert order.status is OrderStatus.PENDING
    assert workers.handed["left-1"] == [None]
    await settle()
    assert dispatcher._fresh == {}


async def test_an_order_never_executes_twice_at_once(make_dispatcher: MakeDispatcher) -> None:
    store, workers = FakeSubmissions(open_ids=["busy"]), FakeWorkers(4)
    dispatcher = make_dispatcher(store, workers, per_worker=4, redispatch_delay_s=0.01)
    workers.failures["busy"] = [WorkerLost("died"), WorkerLost("died again")]
    workers.gate.clear()

    await dispatcher.start()
    await until(lambda: workers.in_flight == 1)
    # While it runs, everything that could queue it again tries to.
    for _ in range(5):
        dispatcher.enqueue("busy")
    await dispatcher.start()
    await settle()
    assert workers.in_flight == 1
    assert dispatcher.stats()["queued"] == 0

    workers.gate.set()
    for _ in range(30):  # keep poking through the lost runs and re-dispatch delays
        dispatcher.enqueue("busy")
        await asyncio.sleep(0.002)
    await until(lambda: "busy" in workers.finished)
    await settle()

    assert workers.overlaps == []
    assert workers.max_in_flight == 1
    assert workers.started.count("busy") >= 3  # lost twice, then completed


async def test_an_order_that_takes_its_worker_down_every_time_is_failed_with_nothing_sent(
        make_dispatcher: MakeDispatcher) -> None:
    store, workers, events, open_orders = FakeStore(), FakeWorkers(2), Events(), OpenOrders()
    dispatcher = make_dispatcher(store, workers, open_orders=open_orders, events=events,
                                 max_worker_losses=3)
    poison, _ = await submit(dispatcher, new_order("poison"))
    fine, _ = await submit(dispatcher, new_order("fine"))
    workers.failures[poison.order_id] = [WorkerLost("the actor died")] * 10
    workers.failures[fine.order_id] = [WorkerLost("died beside it")]

    await dispatcher.start()
    await until(lambda: store.orders[poison.order_id].status is OrderStatus.FAILED)
    await until(lambda: workers.finished == [fine.order_id])
    await settle()

    assert workers.started.count(poison.order_id) == 3  # then never again
    (event,) = events.published
    assert (event.order_id, event.status, event.error_class) == (
        poison.order_id, OrderStatus.FAILED, "terminal")
    assert event.error is not None and "lost with its worker 3 times in a row" in event.error
    assert len(open_orders) == 0  # neither counts against its account any more
    assert counts(dispatcher) == {"queued": 0, "executing": 0, "capacity": 4}


async def test_a_signed_order_is_never_failed_for_lost_workers_only_dispatched_again(
        make_dispatcher: MakeDispatcher) -> None:
    # Past routing a signed transaction may still land: only the executor may settle it.
    store, workers = FakeStore(), FakeWorkers(1)
    dispatcher = make_dispatcher(store, workers, max_worker_losses=2)
    order, _ = await submit(dispatcher, new_order())
    store.orders[order.order_id] = replace(order, status=OrderStatus.BUILDING, attempt=1)
    workers.failures[order.order_id] = [WorkerLost("the actor died")] * 4

    await dispatcher.start()
    await until(lambda: workers.finished == [order.order_id], timeout_s=5.0)

    assert workers.started.count(order.order_id) == 5
    assert store.orders[order.order_id].status is OrderStatus.BUILDING


async def test_each_lost_worker_in_a_row_doubles_the_wait_before_the_order_runs_again(
        make_dispatcher: MakeDispatcher) -> None:
    store, workers = FakeStore(), FakeWorkers(1)
    dispatcher = make_dispatcher(store, workers, redispatch_delay_s=0.02)
    order, _ = await submit(dispatcher, new_order())
    workers.failures[order.order_id] = [WorkerLost("the actor died")] * 3
    starts: list[float] = []
    execute = workers.execute

    async def timed(name: str, order_id: str, stored: Order | None = None) -> str | None:
        starts.append(time.monotonic())
        return await execute(name, order_id, stored)

    workers.execute = timed  # type: ignore[method-assign]
    await dispatcher.start()
    await until(lambda: workers.finished == [order.order_id], timeout_s=5.0)

    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert len(gaps) == 3
    for gap, wait in zip(gaps, (0.02, 0.04, 0.08), strict=True):
        assert gap >= wait


# --- open-order bounds ----------------------------------------------------------------------


async def test_one_account_at_its_open_order_bound_does_not_block_another(
        make_dispatcher: MakeDispatcher) -> None:
    store, workers = FakeSubmissions(), FakeWorkers(1)
    workers.gate.clear()  # nothing finishes: every accepted order stays open
    dispatcher = make_dispatcher(store, workers, open_orders=OpenOrders(bound=10, per_account=2))
    await dispatcher.start()
    alice = [replace(new_order(f"a-{i}"), account_id="alice") for i in range(3)]
    bob = replace(new_order("b-1"), account_id="bob")

    answers = await dispatcher.submit_many([*alice, bob])

    assert [isinstance(a, Overloaded) for a in answers] == [False, False, True, False]
    assert "'alice' has 2 open orders" in str(answers[2])
    assert dispatcher.stats()["open"] == 3
    # A repeat of a stored order is answered with it even at the bound, and takes no place.
    (again,) = await dispatcher.submit_many([alice[0]])
    assert not isinstance(again, DexecError) and again[1] is False
    assert dispatcher.stats()["open"] == 3

    workers.gate.set()  # alice's orders finish: her places are free again
    await until(lambda: len(workers.finished) == 3)
    (later,) = await dispatcher.submit_many([alice[2]])
    assert not isinstance(later, DexecError) and later[1] is True


async def test_at_capacity_refuses_past_the_bound_and_stores_nothing_of_what_it_refused(
        make_dispatcher: MakeDispatcher) -> None:
    store, workers = FakeSubmissions(), FakeWorkers(2)
    workers.gate.clear()  # nothing finishes: every accepted order stays in flight
    now = [0.0]
    admission = LatencyAdmission(0.5, floor=4, min_samples=1, clock=lambda: now[0])
    dispatcher = make_dispatcher(store, workers, admission=admission, clock=lambda: now[0])
    await dispatcher.start()
    burst = [new_order(f"c-{i}") for i in range(10)]

    answers = await dispatcher.submit_many(burst)

    accepted = [a for a in answers if not isinstance(a, DexecError)]
    refused = [a for a in answers if isinstance(a, DexecError)]
    assert len(accepted) == 4 and all(created for _, created in accepted)
    assert all(isinstance(a, AtCapacity) and a.retry_after_s >= 1 for a in refused)
    assert len(refused) == 6
    # Nothing of a refused order exists: not stored, not queued, holding no place.
    assert sorted(store.orders) == sorted(order.order_id for order, _ in accepted)
    assert dispatcher.stats()["open"] == 4
    # A repeat of a stored order is still answered with it, at capacity.
    (again,) = await dispatcher.submit_many([burst[0]])
    assert not isinstance(again, DexecError) and again[1] is False

    for order, _ in accepted:
        workers.outcomes[order.order_id] = "confirmed"
    now[0] = 0.2
    workers.gate.set()  # the admitted orders finish, each exactly once
    await until(lambda: len(workers.finished) == 4)
    assert sorted(workers.finished) == sorted(store.orders) and not workers.overlaps
    assert dispatcher.stats()["open"] == 0
    now[0] = 1.5  # a window closed: the durations measured (0.2 s) are the baseline
    assert admission.baseline_s == pytest.approx(0.2)
    # Room again: the refused orders are accepted when they come back.
    retried = await dispatcher.submit_many(burst[4:8])
    assert all(not isinstance(a, DexecError) and a[1] for a in retried)


async def test_past_the_bound_a_submission_waits_for_room_and_is_taken_when_an_order_ends(
        make_dispatcher: MakeDispatcher) -> None:
    store, workers = FakeSubmissions(), FakeWorkers(2)
    workers.gate.clear()
    admission = LatencyAdmission(0.5, floor=4, min_samples=1, clock=lambda: 0.0)
    dispatcher = make_dispatcher(store, workers, admission=admission, admission_wait_s=5.0)
    await dispatcher.start()
    first = await dispatcher.submit_many([new_order(f"c-{i}") for i in range(4)])
    assert all(not isinstance(a, DexecError) for a in first)

    late = asyncio.create_task(dispatcher.submit_many([new_order("late")]))
    await settle()
    assert not late.done()  # waiting for room, holding its caller's place
    assert len(store.orders) == 4

    workers.gate.set()  # the four finish
    (answer,) = await asyncio.wait_for(late, 2.0)
    assert not isinstance(answer, DexecError) and answer[1]
    await until(lambda: len(workers.finished) == 5)


async def test_with_no_room_by_the_end_of_its_wait_a_submission_is_refused_and_not_stored(
        make_dispatcher: MakeDispatcher) -> None:
    store, workers = FakeSubmissions(), FakeWorkers(2)
    workers.gate.clear()  # nothing finishes
    admission = LatencyAdmission(0.5, floor=4, min_samples=1, clock=lambda: 0.0)
    dispatcher = make_dispatcher(store, workers, admission=admission, admission_wait_s=0.05)
    await dispatcher.start()
    await dispatcher.submit_many([new_order(f"c-{i}") for i in range(4)])

    started = time.monotonic()
    refused = await dispatcher.submit_many([new_order("late"), new_order("later")])

    assert time.monotonic() - started >= 0.05  # one wait for the batch, not one per order
    assert all(isinstance(a, AtCapacity) for a in refused)
    assert len(store.orders) == 4 and dispatcher.stats()["open"] == 4
    workers.gate.set()


async def test_orders_open_at_start_count_against_their_account(
        make_dispatcher: MakeDispatcher) -> None:
    store, workers = FakeSubmissions(open_ids=["left-1", "left-2"]), FakeWorkers(1)
    workers.gate.clear()
    dispatcher = make_dispatcher(store, workers, open_orders=OpenOrders(per_account=2))
    await dispatcher.start()

    (answer,) = await dispatcher.submit_many([new_order("c-1")])

    assert isinstance(answer, Overloaded)
    workers.gate.set()
    await until(lambda: len(workers.finished) == 2)
    assert dispatcher.stats()["open"] == 0


async def test_an_order_above_its_per_order_cap_is_refused_and_not_stored(
        make_dispatcher: MakeDispatcher) -> None:
    store, workers = FakeSubmissions(), FakeWorkers(1)
    mint = new_order().input_mint
    dispatcher = make_dispatcher(store, workers, caps=AmountCaps(per_order={mint: 10**9}))
    await dispatcher.start()
    (refused,) = await dispatcher.submit_many([new_order(amount_in=10**9 + 1)])
    assert isinstance(refused, LimitExceeded) and "per-order cap" in refused.message
    assert store.orders == {}
    _, created = await submit(dispatcher, new_order(amount_in=10**9))
    assert created
    dry = replace(new_order(amount_in=10**12), dry_run=True)  # a dry run sells nothing
    assert (await submit(dispatcher, dry))[1]


async def test_the_daily_cap_counts_the_day_and_gets_failed_orders_back(
        make_dispatcher: MakeDispatcher) -> None:
    store, workers = FakeSubmissions(), FakeWorkers(1)
    mint = new_order().input_mint
    store.sold_today = {mint: 4 * 10**9}  # sold earlier today, before a restart
    workers.gate.clear()
    dispatcher = make_dispatcher(store, workers, caps=AmountCaps(per_day={mint: 10 * 10**9}))
    await dispatcher.start()
    first, _ = await submit(dispatcher, new_order(amount_in=5 * 10**9))
    (refused,) = await dispatcher.submit_many([new_order(amount_in=2 * 10**9)])
    assert isinstance(refused, LimitExceeded) and "daily cap" in refused.message
    assert len(store.orders) == 1
    # The first order fails: what it would have sold counts no more.
    workers.outcomes[first.order_id] = "failed"
    workers.gate.set()
    await until(lambda: first.order_id in workers.finished)
    await settle()
    _, created = await submit(dispatcher, new_order(amount_in=6 * 10**9))
    assert created
    (full,) = await dispatcher.submit_many([new_order(amount_in=1)])
    assert isinstance(full, LimitExceeded)


def test_the_daily_cap_starts_again_each_utc_day() -> None:
    from datetime import UTC, timedelta

    now = [datetime(2026, 11, 30, 23, 59, tzinfo=UTC)]
    caps = AmountCaps(per_day={"m": 10}, clock=lambda: now[0])
    yesterday = caps.reserve("m", 10)
    caps.hold("o-1", "m", 10, yesterday)
    with pytest.raises(LimitExceeded):
        caps.reserve("m", 1)
    now[0] += timedelta(minutes=2)
    caps.reserve("m", 10)  # a new day
    caps.failed("o-1")  # yesterday's order fails today: today's count keeps today's 10
    with pytest.raises(LimitExceeded):
        caps.reserve("m", 1)
