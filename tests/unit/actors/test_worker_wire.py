"""The manager's client of a worker over the worker's loopback wire (WiredHandle)."""

from __future__ import annotations

import asyncio

import pytest

from actors.execution_worker import WorkerClient
from actors.shell import WiredHandle
from actors.worker_fleet import Handover, Outcome
from core.errors import WorkerLost
from tests.kit.fakes import ActorMethod, FakeWire
from tests.kit.orders import make_order


class WiredWorker:
    """A fake worker actor handle: `accept` and `finished` as actor methods, and on a loopback
    wire of its node, as ExecutionWorker serves them."""

    def __init__(self, node: str) -> None:
        self.wire = FakeWire(self, node, ("accept", "finished"))
        self.served = self.wire.served
        self.accepted: list[list[Handover]] = []
        self.outcomes: asyncio.Queue[list[tuple[str, Outcome]]] = asyncio.Queue()
        self.accept = ActorMethod(self._accept)
        self.finished = ActorMethod(self._finished)
        self.wire_address = ActorMethod(self.wire.address)

    async def _accept(self, orders: list[Handover]) -> str:
        self.accepted.append(orders)
        return "inc-1"

    async def _finished(self, timeout_s: float) -> tuple[str, list[tuple[str, Outcome]]]:
        return "inc-1", await self.outcomes.get()

    async def die(self) -> None:
        """The worker's process is gone: its wire closes with it."""
        await self.wire.close()


async def test_on_the_managers_node_hand_overs_and_outcomes_go_over_the_wire() -> None:
    worker = WiredWorker("node-a")
    client = WorkerClient(WiredHandle(worker, "node-a"))
    order = make_order()
    try:
        assert await client.accept([(order.order_id, order)]) == "inc-1"
        worker.outcomes.put_nowait([(order.order_id, "confirmed")])
        assert await client.finished(1.0) == ("inc-1", [(order.order_id, "confirmed")])

        assert worker.served == ["accept", "finished"]
        assert worker.accept.calls == [] and worker.finished.calls == []
        assert len(worker.wire_address.calls) == 1
        # The order as stored travels whole: the worker quotes from it.
        assert worker.accepted == [[(order.order_id, order)]]
    finally:
        await worker.die()


async def test_a_worker_gone_while_its_outcomes_are_awaited_is_lost() -> None:
    worker = WiredWorker("node-a")
    client = WorkerClient(WiredHandle(worker, "node-a"))
    await client.accept([("o-1", None)])
    waiting = asyncio.ensure_future(client.finished(30.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()

    await worker.die()

    with pytest.raises(WorkerLost):
        await asyncio.wait_for(waiting, 5.0)


async def test_on_another_node_the_worker_is_called_as_an_actor() -> None:
    worker = WiredWorker("node-b")
    client = WorkerClient(WiredHandle(worker, "node-a"))
    try:
        await client.accept([("o-1", None)])
        await client.accept([("o-2", None)])

        assert worker.served == []
        assert len(worker.accept.calls) == 2
        assert len(worker.wire_address.calls) == 1  # asked once: the node does not change
    finally:
        await worker.die()


async def test_without_the_wire_the_worker_is_called_as_an_actor() -> None:
    worker = WiredWorker("node-a")
    client = WorkerClient(WiredHandle(worker, None))

    await client.accept([("o-1", None)])

    assert worker.wire_address.calls == [] and len(worker.accept.calls) == 1
