"""Unit tests for the OrderManager's workers: WorkerLink's batched hand-overs and outcomes,
and WorkerFleet's placement of workers, with in-memory workers and placement."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import pytest

from actors.worker_fleet import (
    FinishedOutcomes,
    Handover,
    Outcome,
    WorkerFleet,
    WorkerLink,
    node_worker_name,
    worker_name,
)
from core.errors import InvalidInput, WorkerLost
from tests.kit.clock import FakeClock
from tests.kit.loop import settle, until

T = TypeVar("T")

NODE_A = "a1" * 28  # Ray node ids are 56 hex digits
NODE_B = "b2" * 28
NODE_C = "c3" * 28


class FakeWorker:
    """A WorkerHandle whose `finished` answers are scripted by the test.

    `accept` answers at once with the current incarnation unless `hold` is set, then it
    answers (with the incarnation current at that moment) once `hold` is set.
    """

    def __init__(self, incarnation: str = "inc-1") -> None:
        self.incarnation = incarnation
        self.accepted: list[list[str]] = []
        self.hold: asyncio.Event | None = None
        self._answers: asyncio.Queue[tuple[str, list[tuple[str, Outcome]]] | BaseException] = (
            asyncio.Queue())
        self._pollers: set[asyncio.Task[object]] = set()

    async def accept(self, orders: list[Handover]) -> str:
        self.accepted.append([order_id for order_id, _ in orders])
        if self.hold is not None:
            await self.hold.wait()
        return self.incarnation

    async def finished(self, timeout_s: float) -> tuple[str, list[tuple[str, Outcome]]]:
        task = asyncio.current_task()
        assert task is not None
        self._pollers.add(task)
        answer = await self._answers.get()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def report(self, *outcomes: tuple[str, Outcome], incarnation: str | None = None) -> None:
        """Make the outstanding (or next) `finished` call answer these outcomes."""
        self._answers.put_nowait((incarnation or self.incarnation, list(outcomes)))

    def die(self, why: str = "the actor died") -> None:
        """Make the outstanding (or next) `finished` call raise WorkerLost."""
        self.fail(WorkerLost(why))

    def fail(self, error: BaseException) -> None:
        """Make the outstanding (or next) `finished` call raise `error`."""
        self._answers.put_nowait(error)

    def stop(self) -> None:
        """End the link's poll that is parked in `finished` (test teardown)."""
        for task in self._pollers:
            task.cancel()


class FakePlacement:
    """A WorkerPlacement over FakeWorkers; the test sets which nodes are alive."""

    def __init__(self) -> None:
        self.nodes: set[str] = set()
        self.retire_fails = False
        self.spawned: list[tuple[str, str | None]] = []
        self.retired: list[str] = []
        self.workers: dict[str, FakeWorker] = {}

    def spawn(self, name: str, node_id: str | None) -> FakeWorker:
        self.spawned.append((name, node_id))
        self.workers[name] = FakeWorker()
        return self.workers[name]

    def retire(self, name: str) -> None:
        self.retired.append(name)
        if self.retire_fails:
            raise RuntimeError(f"{name} is already gone")

    async def alive_nodes(self) -> set[str]:
        await asyncio.sleep(0)  # a GCS round trip
        return set(self.nodes)


@pytest.fixture
async def worker() -> AsyncIterator[FakeWorker]:
    fake = FakeWorker()
    yield fake
    fake.stop()
    await settle()


@pytest.fixture
async def placement() -> AsyncIterator[FakePlacement]:
    fake = FakePlacement()
    yield fake
    for w in fake.workers.values():
        w.stop()
    await settle()


async def done(awaitable: Awaitable[T], timeout_s: float = 2.0) -> T:
    """Await it; fail the test instead of hanging when it never finishes."""
    return await asyncio.wait_for(awaitable, timeout_s)


def start(link: WorkerLink | WorkerFleet, *args: str) -> asyncio.Task[str | None]:
    return asyncio.get_running_loop().create_task(link.execute(*args))  # type: ignore[arg-type]


# --- WorkerLink: hand-overs ---------------------------------------------------------------------


async def test_orders_handed_over_within_the_window_go_in_one_accept_call(
        worker: FakeWorker) -> None:
    link = WorkerLink("w", worker, window_s=0.1, sleep=FakeClock().sleep)
    first = start(link, "a")
    await settle()  # several loop turns apart, but inside the window
    second, third = start(link, "b"), start(link, "c")
    await until(lambda: bool(worker.accepted))
    assert worker.accepted == [["a", "b", "c"]]
    worker.report(("a", "confirmed"), ("b", "confirmed"), ("c", "failed"))
    assert await done(asyncio.gather(first, second, third)) == ["confirmed", "confirmed", "failed"]


async def test_an_accept_that_fails_fails_its_orders(worker: FakeWorker) -> None:
    async def dead(order_ids: list[str]) -> str:
        raise WorkerLost("accept: the actor died")

    worker.accept = dead  # type: ignore[method-assign]
    link = WorkerLink("w", worker, window_s=0, sleep=FakeClock().sleep)
    with pytest.raises(WorkerLost, match="accept: the actor died"):
        await done(link.execute("a"))


# --- WorkerLink: outcomes -----------------------------------------------------------------------


async def test_outcomes_resolve_their_own_orders_across_polls(worker: FakeWorker) -> None:
    link = WorkerLink("w", worker, window_s=0, sleep=FakeClock().sleep)
    a, b, c, d = (start(link, o) for o in ("a", "b", "c", "d"))
    await until(lambda: worker.accepted == [["a", "b", "c", "d"]])

    # Out of order, with an order this link never handed over.
    worker.report(("b", None), ("stranger", "confirmed"), ("a", "confirmed"))
    await until(lambda: a.done() and b.done())
    assert a.result() == "confirmed"
    assert b.result() is None  # the worker does not know the order
    await settle()
    assert not c.done() and not d.done()  # a poll by the same incarnation loses nothing

    worker.report(("c", InvalidInput("amount: too small")), ("d", "failed"))
    with pytest.raises(InvalidInput, match="amount: too small"):
        await done(c)
    assert await done(d) == "failed"


@pytest.mark.parametrize(("failure", "why"), [
    pytest.param(WorkerLost("the actor died"), "w-7 died: the actor died", id="worker_lost"),
    # Any other error (a lost reply, a bug): the outcomes it carried are gone all the same.
    pytest.param(RuntimeError("connection reset"),
                 "outcomes from w-7 lost: RuntimeError: connection reset",
                 id="any_other_error"),
])
async def test_a_lost_worker_fails_every_waiting_order_and_the_link_keeps_polling(
        worker: FakeWorker, failure: Exception, why: str) -> None:
    clock = FakeClock()
    link = WorkerLink("w-7", worker, window_s=0, sleep=clock.sleep)
    a, b = start(link, "a"), start(link, "b")
    await until(lambda: worker.accepted == [["a", "b"]])

    worker.fail(failure)
    for task in (a, b):  # bounded: an order nobody reports lost would hang here
        with pytest.raises(WorkerLost, match=f"{why}$"):
            await done(task)
    assert clock.sleeps == [0.2]  # one pause before asking again, not a busy loop

    # The orders are dispatched again (to the restarted worker) through the same link.
    worker.incarnation = "inc-2"
    again = start(link, "a")
    await until(lambda: len(worker.accepted) == 2)
    worker.report(("a", "confirmed"))
    assert await done(again) == "confirmed"
    assert clock.sleeps == [0.2]


async def test_a_restarted_worker_loses_only_what_the_old_incarnation_accepted(
        worker: FakeWorker) -> None:
    link = WorkerLink("w", worker, window_s=0, sleep=FakeClock().sleep)
    old = start(link, "old")
    await until(lambda: worker.accepted == [["old"]])
    await settle()  # its accept answered: inc-1 holds it

    worker.hold = asyncio.Event()
    in_flight = start(link, "in-flight")
    await until(lambda: len(worker.accepted) == 2)  # its accept has not answered yet

    worker.incarnation = "inc-2"  # the worker restarted
    worker.report()
    with pytest.raises(WorkerLost, match="restarted"):
        await done(old)
    await settle()
    assert not in_flight.done()

    worker.hold.set()  # the new incarnation accepts it
    await settle()
    worker.report()  # inc-2 again: nothing is lost
    await settle()
    assert not in_flight.done()
    worker.report(("in-flight", "confirmed"))
    assert await done(in_flight) == "confirmed"


async def test_an_outcome_arriving_after_its_order_was_lost_changes_nothing(
        worker: FakeWorker) -> None:
    link = WorkerLink("w", worker, window_s=0, sleep=FakeClock().sleep)
    old = start(link, "old")
    await until(lambda: worker.accepted == [["old"]])
    await settle()
    worker.hold = asyncio.Event()
    in_flight = start(link, "in-flight")
    await until(lambda: len(worker.accepted) == 2)

    # Both answers are there before the lost order's caller runs again.
    worker.incarnation = "inc-2"
    worker.report()
    worker.report(("old", "confirmed"))
    with pytest.raises(WorkerLost, match="restarted"):
        await done(old)

    worker.hold.set()  # the link still serves the order it holds
    await settle()
    worker.report(("in-flight", "confirmed"))
    assert await done(in_flight) == "confirmed"


async def test_close_fails_waiting_orders_and_refuses_new_ones(worker: FakeWorker) -> None:
    link = WorkerLink("w", worker, window_s=0, sleep=FakeClock().sleep)
    waiting = start(link, "a")
    await until(lambda: worker.accepted == [["a"]])

    link.close("w was retired")
    with pytest.raises(WorkerLost, match="w was retired"):
        await done(waiting)
    with pytest.raises(WorkerLost, match="w was retired"):
        await done(link.execute("b"))
    assert worker.accepted == [["a"]]  # the refused order never reached the worker


# --- WorkerFleet ----------------------------------------------------------------------------------


async def test_a_fixed_pool_spawns_its_workers_once(placement: FakePlacement) -> None:
    placement.nodes = {NODE_A}  # ignored: the pool is spread over the cluster
    fleet = WorkerFleet(placement, workers=3, workers_per_node=0, window_s=0)
    await fleet.reconcile()
    await fleet.reconcile()
    expected = [worker_name(i) for i in range(3)]
    assert placement.spawned == [(name, None) for name in expected]
    assert fleet.names() == expected
    assert placement.retired == []


async def test_execute_goes_to_the_named_worker(placement: FakePlacement) -> None:
    fleet = WorkerFleet(placement, workers=3, workers_per_node=0, window_s=0)
    await fleet.reconcile()
    task = start(fleet, worker_name(1), "o1")
    chosen = placement.workers[worker_name(1)]
    await until(lambda: chosen.accepted == [["o1"]])
    assert not placement.workers[worker_name(0)].accepted
    assert not placement.workers[worker_name(2)].accepted
    chosen.report(("o1", "confirmed"))
    assert await done(task) == "confirmed"


async def test_execute_on_an_unknown_worker_raises_worker_lost(placement: FakePlacement) -> None:
    fleet = WorkerFleet(placement, workers=1, workers_per_node=0, window_s=0)
    await fleet.reconcile()
    with pytest.raises(WorkerLost):
        await done(fleet.execute("ExecutionWorker-9", "o1"))


async def test_workers_per_node_are_pinned_to_each_alive_node(placement: FakePlacement) -> None:
    placement.nodes = {NODE_A, NODE_B}
    fleet = WorkerFleet(placement, workers=5, workers_per_node=2, window_s=0)
    await fleet.reconcile()
    await fleet.reconcile()
    expected = {(node_worker_name(n, k), n) for n in (NODE_A, NODE_B) for k in range(2)}
    assert len(placement.spawned) == 4 and set(placement.spawned) == expected
    assert sorted(fleet.names()) == sorted(name for name, _ in expected)

    placement.nodes = {NODE_A, NODE_B, NODE_C}  # a node joins
    await fleet.reconcile()
    assert placement.spawned[4:] == [(node_worker_name(NODE_C, k), NODE_C) for k in range(2)]
    assert placement.retired == []


async def order_waiting_on_a_node_that_leaves(
        placement: FakePlacement, *, per_node: int,
) -> tuple[WorkerFleet, str, asyncio.Task[str | None]]:
    """Pin `per_node` workers to each of nodes A and B, hand B's first worker an order, then
    let node B leave and reconcile; return the fleet, that worker's name and the order."""
    placement.nodes = {NODE_A, NODE_B}
    fleet = WorkerFleet(placement, workers=1, workers_per_node=per_node, window_s=0)
    await fleet.reconcile()
    on_b = node_worker_name(NODE_B, 0)
    waiting = start(fleet, on_b, "o1")
    await until(lambda: placement.workers[on_b].accepted == [["o1"]])

    placement.nodes = {NODE_A}
    await fleet.reconcile()
    return fleet, on_b, waiting


async def test_the_workers_of_a_node_that_left_are_retired(placement: FakePlacement) -> None:
    fleet, on_b, waiting = await order_waiting_on_a_node_that_leaves(placement, per_node=2)

    assert sorted(placement.retired) == sorted(node_worker_name(NODE_B, k) for k in range(2))
    with pytest.raises(WorkerLost, match="retired"):
        await done(waiting)
    assert sorted(fleet.names()) == sorted(node_worker_name(NODE_A, k) for k in range(2))
    with pytest.raises(WorkerLost):
        await done(fleet.execute(on_b, "o2"))
    await fleet.reconcile()  # retired once, and node A keeps its workers
    assert len(placement.retired) == 2
    assert len(placement.spawned) == 4


async def test_a_worker_whose_kill_fails_is_still_retired(placement: FakePlacement) -> None:
    placement.retire_fails = True
    # The kill's error does not escape the reconcile that retires the worker.
    fleet, on_b, waiting = await order_waiting_on_a_node_that_leaves(placement, per_node=1)

    assert placement.retired == [on_b]
    with pytest.raises(WorkerLost, match="retired"):
        await done(waiting)
    assert fleet.names() == [node_worker_name(NODE_A, 0)]


async def test_outcomes_finishing_together_come_back_in_one_answer() -> None:
    box = FinishedOutcomes(gather_s=0.05)
    taking = asyncio.create_task(box.take(timeout_s=5.0))
    await asyncio.sleep(0)
    box.add("o1", "confirmed")
    await asyncio.sleep(0.01)
    box.add("o2", "failed")

    assert await taking == [("o1", "confirmed"), ("o2", "failed")]


async def test_outcomes_already_waiting_are_answered_at_once() -> None:
    box = FinishedOutcomes(gather_s=10.0)
    box.add("o1", "confirmed")

    async with asyncio.timeout(1.0):  # no gathering: they waited for this call already
        assert await box.take(timeout_s=5.0) == [("o1", "confirmed")]


async def test_a_take_with_nothing_finished_answers_empty_after_its_timeout() -> None:
    box = FinishedOutcomes(gather_s=10.0)

    async with asyncio.timeout(1.0):
        assert await box.take(timeout_s=0.01) == []
