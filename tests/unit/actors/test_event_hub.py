"""Unit tests for status-event fan-out: the Notifier's EventHub and the EventBatcher."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from actors.event_hub import EventBatcher, EventHub
from tests.kit.clock import FakeClock
from tests.kit.loop import settle, until
from tests.kit.orders import Frame, frame

# --- EventHub -------------------------------------------------------------------------------


async def test_only_watched_orders_reach_the_replica_that_watches_them() -> None:
    hub = EventHub()
    hub.watch("r1", ["a", "b"])
    hub.watch("r2", ["b", "c"])

    dropped = hub.publish([frame("a", 2), frame("b", 2), frame("c", 2), frame("unwatched", 2)])

    assert [e["order_id"] for e in await hub.take("r1", 0.01)] == ["a", "b"]
    assert [e["order_id"] for e in await hub.take("r2", 0.01)] == ["b", "c"]
    assert dropped == 0


async def test_take_returns_everything_queued_in_one_batch_in_order() -> None:
    hub = EventHub()
    hub.watch("r1", ["a", "b"])
    for seq in range(2, 6):
        hub.publish([frame("a", seq), frame("b", seq)])

    batch = await hub.take("r1", 0.01)

    assert [(e["order_id"], e["seq"]) for e in batch] == [
        (o, s) for s in range(2, 6) for o in ("a", "b")
    ]
    assert await hub.take("r1", 0.01) == []  # taken means gone


async def test_take_waits_up_to_the_timeout_when_nothing_is_queued() -> None:
    hub = EventHub()
    hub.watch("r1", ["a"])
    loop = asyncio.get_running_loop()

    started = loop.time()
    assert await hub.take("r1", 0.1) == []
    assert loop.time() - started >= 0.09


async def test_take_returns_as_soon_as_an_event_arrives() -> None:
    hub = EventHub()
    hub.watch("r1", ["a"])
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.create_task(hub.take("r1", 5.0))
    await settle(5)
    assert not waiting.done()

    hub.publish([frame("a", 2)])

    assert await asyncio.wait_for(waiting, 1.0) == [frame("a", 2)]
    assert loop.time() - started < 1.0


async def test_a_terminal_event_removes_the_watch() -> None:
    hub = EventHub()
    hub.watch("r1", ["a"])
    hub.watch("r2", ["a"])

    hub.publish([frame("a", 4), frame("a", 5, "confirmed"), frame("a", 6)])

    for replica in ("r1", "r2"):
        taken = await hub.take(replica, 0.01)
        assert [e["seq"] for e in taken] == [4, 5]
    hub.publish([frame("a", 7)])
    assert await hub.take("r1", 0.01) == []


async def test_a_failed_event_is_terminal_too() -> None:
    hub = EventHub()
    hub.watch("r1", ["a"])
    hub.publish([frame("a", 3, "failed")])
    hub.publish([frame("a", 4)])
    assert [e["seq"] for e in await hub.take("r1", 0.01)] == [3]


async def test_unwatch_stops_delivery_to_that_replica_only() -> None:
    hub = EventHub()
    hub.watch("r1", ["a"])
    hub.watch("r2", ["a"])

    hub.unwatch("r1", ["a"])
    hub.unwatch("r1", ["never-watched"])  # harmless
    hub.publish([frame("a", 2)])

    assert await hub.take("r1", 0.01) == []
    assert await hub.take("r2", 0.01) == [frame("a", 2)]


async def test_a_full_queue_drops_and_counts_instead_of_growing() -> None:
    hub = EventHub(max_queue=3)
    hub.watch("r1", ["a"])

    dropped = hub.publish([frame("a", seq) for seq in range(2, 8)])

    assert [e["seq"] for e in await hub.take("r1", 0.01)] == [2, 3, 4]
    assert dropped == 3


async def test_a_replica_that_stops_polling_is_forgotten() -> None:
    clock = FakeClock()
    hub = EventHub(stale_after_s=0.05, clock=clock)
    hub.watch("alive", ["a"])
    hub.watch("gone", ["a", "b"])
    clock.advance(0.06)

    await hub.take("alive", 0.0)  # polling again runs the clean-up
    hub.publish([frame("a", 2), frame("b", 2)])

    assert await hub.take("alive", 0.01) == [frame("a", 2)]
    assert await hub.take("gone", 0.01) == []  # it must watch again after coming back


# --- EventBatcher ---------------------------------------------------------------------------


@dataclass
class RecordingSend:
    batches: list[list[Frame]]
    fail_first: int = 0

    async def __call__(self, events: list[Frame]) -> None:
        await asyncio.sleep(0)
        if self.fail_first > 0:
            self.fail_first -= 1
            raise ConnectionError("notifier unavailable")
        self.batches.append(list(events))

    def delivered(self) -> list[Frame]:
        return [e for batch in self.batches for e in batch]


async def test_batcher_turns_many_adds_into_few_sends() -> None:
    send = RecordingSend([])
    batcher = EventBatcher(send, interval_s=0.01, max_batch=500)
    events = [frame("a", seq) for seq in range(1000)]

    for e in events:
        batcher.add(e)
    await until(lambda: len(send.delivered()) == len(events))

    assert send.delivered() == events
    assert 1 <= len(send.batches) <= 2


async def test_batcher_collects_adds_spread_over_time() -> None:
    send = RecordingSend([])
    batcher = EventBatcher(send, interval_s=0.05)
    events = [frame("a", seq) for seq in range(100)]

    for e in events:
        batcher.add(e)
        await asyncio.sleep(0)
    await until(lambda: len(send.delivered()) == 100)

    assert send.delivered() == events
    assert len(send.batches) <= 3


async def test_batcher_sends_a_lone_event_within_the_interval() -> None:
    send = RecordingSend([])
    batcher = EventBatcher(send, interval_s=0.01)

    batcher.add(frame("a", 1))

    await until(lambda: send.batches == [[frame("a", 1)]], timeout_s=1.0)
    # The batcher keeps working after going idle.
    batcher.add(frame("a", 2))
    await until(lambda: len(send.batches) == 2, timeout_s=1.0)
    assert send.batches[1] == [frame("a", 2)]


async def test_batcher_survives_a_failed_send() -> None:
    send = RecordingSend([], fail_first=1)
    batcher = EventBatcher(send, interval_s=0.005)

    batcher.add(frame("a", 1))
    await until(lambda: send.fail_first == 0)
    await settle()
    batcher.add(frame("a", 2))
    await until(lambda: len(send.delivered()) == 1)

    assert send.delivered() == [frame("a", 2)]


async def test_until_watched_answers_as_soon_as_an_order_is_watched() -> None:
    hub = EventHub()
    assert not hub.watched
    assert await hub.until_watched(0.01) is False

    waiting = asyncio.create_task(hub.until_watched(30.0))
    await settle()
    hub.watch("r1", ["a"])

    async with asyncio.timeout(1.0):
        assert await waiting is True
    assert await hub.until_watched(30.0) is True  # watched already: at once
    hub.publish([frame("a", 3, status="confirmed")])  # its terminal event ends the watch
    assert not hub.watched
