"""Unit tests for event fan-out: EventHub, EventBatcher and the replica's StreamHub."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from actors.fanout import EventBatcher, EventHub
from core.orders import Order, OrderEvent, OrderStatus, OrderType
from serve.stream import Connection, StreamHub
from tests.unit.loop import settle, until

SOL = "So11111111111111111111111111111111111111112"
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
LIFE = [OrderStatus.PENDING, OrderStatus.ROUTING, OrderStatus.BUILDING, OrderStatus.SUBMITTED,
        OrderStatus.CONFIRMED]

Frame = dict[str, Any]


def event(order_id: str, seq: int, status: OrderStatus | None = None) -> OrderEvent:
    status = status or LIFE[min(seq, len(LIFE) - 1) - 1]
    return OrderEvent(order_id, seq, status, T0 + timedelta(seconds=seq), attempt=1)


def frame(order_id: str, seq: int, status: str = "routing") -> Frame:
    return {"type": "order", "order_id": order_id, "seq": seq, "status": status}




# --- EventHub -------------------------------------------------------------------------------


async def test_only_watched_orders_reach_the_replica_that_watches_them() -> None:
    hub = EventHub()
    hub.watch("r1", ["a", "b"])
    hub.watch("r2", ["b", "c"])

    hub.publish([frame("a", 2), frame("b", 2), frame("c", 2), frame("unwatched", 2)])

    assert [e["order_id"] for e in await hub.take("r1", 0.01)] == ["a", "b"]
    assert [e["order_id"] for e in await hub.take("r2", 0.01)] == ["b", "c"]
    assert hub.published == 4


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

    hub.publish([frame("a", seq) for seq in range(2, 8)])

    assert [e["seq"] for e in await hub.take("r1", 0.01)] == [2, 3, 4]
    assert hub.dropped == 3


async def test_a_replica_that_stops_polling_is_forgotten() -> None:
    hub = EventHub(stale_after_s=0.05)
    hub.watch("alive", ["a"])
    hub.watch("gone", ["a", "b"])
    await asyncio.sleep(0.06)

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
    await batcher.flush()

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
    await batcher.flush()

    assert send.delivered() == [frame("a", 2)]


# --- StreamHub ------------------------------------------------------------------------------


class FakeNotifier:
    """The Notifier as an EventSource: an EventHub behind async calls, restartable."""

    def __init__(self) -> None:
        self.hub = EventHub()
        self.fail_takes = 0
        self.unwatched: list[str] = []

    async def watch(self, replica_id: str, order_ids: list[str]) -> None:
        self.hub.watch(replica_id, order_ids)

    async def unwatch(self, replica_id: str, order_ids: list[str]) -> None:
        self.unwatched.extend(order_ids)
        self.hub.unwatch(replica_id, order_ids)

    async def take(self, replica_id: str, timeout_s: float) -> list[Frame]:
        if self.fail_takes:
            self.fail_takes -= 1
            raise ConnectionError("notifier restarting")
        return await self.hub.take(replica_id, min(timeout_s, 0.05))

    def restart(self) -> None:
        """Lose every watch, as a restarted actor does, and fail the next poll."""
        self.hub = EventHub()
        self.fail_takes = 1


class FakeHistory:
    """The order_events table: events are written here before they are published."""

    def __init__(self) -> None:
        self.events: dict[str, list[OrderEvent]] = {}

    def write(self, e: OrderEvent) -> OrderEvent:
        self.events.setdefault(e.order_id, []).append(e)
        return e

    async def get_order(self, order_id: str, *, with_history: bool = True) -> Order | None:
        events = self.events.get(order_id)
        if not events:
            return None
        last = events[-1]
        return Order(
            order_id=order_id, account_id="default", client_order_id=None,
            order_type=OrderType.MARKET, input_mint=SOL, output_mint=USDC, amount_in=10**9,
            slippage_bps=50, status=last.status, created_at=T0, updated_at=last.at,
            attempt=last.attempt, seq=last.seq, events=tuple(events) if with_history else (),
        )

    async def events_since(self, order_id: str, since_seq: int) -> list[OrderEvent]:
        return [e for e in self.events.get(order_id, []) if e.seq > since_seq]


@dataclass
class Stream:
    hub: StreamHub
    notifier: FakeNotifier
    history: FakeHistory

    def connect(self) -> tuple[Connection, list[Frame]]:
        sent: list[Frame] = []

        async def send(f: Frame) -> None:
            sent.append(f)

        return Connection(send), sent

    def emit(self, order_id: str, seq: int, status: OrderStatus | None = None,
             *, live: bool = True) -> None:
        """Write an event to history, then (unless lost) publish it, as a worker does."""
        e = self.history.write(event(order_id, seq, status))
        if live:
            self.notifier.hub.publish([e.to_json()])

    def seed(self, order_id: str, upto: int) -> None:
        for seq in range(1, upto + 1):
            self.emit(order_id, seq, live=False)


def seqs(sent: list[Frame], order_id: str = "o1") -> list[int]:
    return [f["seq"] for f in sent if f.get("order_id") == order_id]


@pytest.fixture
async def stream() -> AsyncIterator[Stream]:
    notifier, history = FakeNotifier(), FakeHistory()
    hub = StreamHub(notifier, history)
    yield Stream(hub, notifier, history)
    poller = hub._poller  # the replica's long-poll loop runs until shutdown
    if poller is not None:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller


async def test_subscribe_since_seq_replays_history_then_goes_live_without_duplicates(
    stream: Stream,
) -> None:
    stream.seed("o1", 3)
    conn, sent = stream.connect()

    order = await stream.hub.subscribe(conn, "o1", since_seq=1)

    assert order is not None and order.seq == 3
    assert seqs(sent) == [2, 3]
    assert all(f["type"] == "order" for f in sent)
    # A worker's event published after the read, and a late duplicate of one already replayed.
    stream.notifier.hub.publish([event("o1", 3).to_json()])
    stream.emit("o1", 4)
    await until(lambda: seqs(sent) == [2, 3, 4])
    await settle()
    assert seqs(sent) == [2, 3, 4]


async def test_subscribe_without_since_seq_sends_only_what_comes_next(stream: Stream) -> None:
    stream.seed("o1", 2)
    conn, sent = stream.connect()

    await stream.hub.subscribe(conn, "o1", since_seq=None)
    assert sent == []
    assert conn.last_seq == {"o1": 2}

    stream.emit("o1", 3)
    await until(lambda: seqs(sent) == [3])


async def test_a_gap_in_live_events_is_filled_from_history(stream: Stream) -> None:
    stream.seed("o1", 2)
    conn, sent = stream.connect()
    await stream.hub.subscribe(conn, "o1", since_seq=None)

    stream.emit("o1", 3, live=False)  # lost on the way (e.g. the notifier's queue was full)
    stream.emit("o1", 4, live=False)
    stream.emit("o1", 5, OrderStatus.CONFIRMED)

    await until(lambda: len(sent) == 3)
    await settle()
    assert seqs(sent) == [3, 4, 5]
    assert [f["status"] for f in sent] == ["building", "submitted", "confirmed"]


async def test_events_at_or_below_last_seq_are_dropped(stream: Stream) -> None:
    stream.seed("o1", 3)
    conn, sent = stream.connect()
    await stream.hub.subscribe(conn, "o1", since_seq=None)

    stream.notifier.hub.publish([event("o1", 2).to_json(), event("o1", 3).to_json()])
    stream.emit("o1", 4)

    await until(lambda: bool(sent))
    await settle()
    assert seqs(sent) == [4]


async def test_a_terminal_event_ends_the_subscription(stream: Stream) -> None:
    stream.seed("o1", 3)
    conn, sent = stream.connect()
    await stream.hub.subscribe(conn, "o1", since_seq=None)

    stream.emit("o1", 4)
    stream.emit("o1", 5, OrderStatus.FAILED)
    await until(lambda: seqs(sent) == [4, 5])
    await until(lambda: "o1" in stream.notifier.unwatched)

    assert "o1" not in conn.last_seq
    stream.notifier.hub.watch(stream.hub.replica_id, ["o1"])  # even if something slipped through
    stream.notifier.hub.publish([frame("o1", 6)])
    await settle()
    assert seqs(sent) == [4, 5]


async def test_subscribing_to_a_finished_order_replays_and_ends(stream: Stream) -> None:
    stream.seed("o1", 4)
    stream.emit("o1", 5, OrderStatus.CONFIRMED, live=False)
    conn, sent = stream.connect()

    order = await stream.hub.subscribe(conn, "o1", since_seq=0)

    assert order is not None and order.is_terminal
    assert seqs(sent) == [1, 2, 3, 4, 5]
    assert conn.last_seq == {}


async def test_subscribing_to_an_unknown_order_returns_none(stream: Stream) -> None:
    conn, sent = stream.connect()
    assert await stream.hub.subscribe(conn, "missing", since_seq=None) is None
    assert sent == []
    assert conn.last_seq == {}


async def test_each_connection_gets_its_own_gapless_stream(stream: Stream) -> None:
    stream.seed("o1", 2)
    early, early_sent = stream.connect()
    late, late_sent = stream.connect()
    await stream.hub.subscribe(early, "o1", since_seq=0)
    stream.emit("o1", 3)
    await until(lambda: seqs(early_sent) == [1, 2, 3])
    await stream.hub.subscribe(late, "o1", since_seq=None)

    stream.emit("o1", 4)
    stream.emit("o1", 5, OrderStatus.CONFIRMED)

    await until(lambda: seqs(early_sent) == [1, 2, 3, 4, 5] and seqs(late_sent) == [4, 5])
    await settle()
    assert seqs(early_sent) == [1, 2, 3, 4, 5]
    assert seqs(late_sent) == [4, 5]


async def test_unsubscribe_stops_the_stream(stream: Stream) -> None:
    stream.seed("o1", 2)
    conn, sent = stream.connect()
    await stream.hub.subscribe(conn, "o1", since_seq=None)

    await stream.hub.unsubscribe(conn, ["o1"])
    stream.emit("o1", 3)
    await settle()

    assert sent == []
    assert conn.last_seq == {}


async def test_resubscribing_right_after_the_last_unsubscribe_still_streams(
    stream: Stream,
) -> None:
    stream.seed("o1", 2)
    first, _ = stream.connect()
    second, sent = stream.connect()
    await stream.hub.subscribe(first, "o1", since_seq=None)
    await settle()

    # One client leaves as another arrives for the same order.
    await stream.hub.unsubscribe(first, ["o1"])
    await stream.hub.subscribe(second, "o1", since_seq=None)
    await settle()

    stream.emit("o1", 3)
    await until(lambda: seqs(sent) == [3], timeout_s=0.5)


async def test_a_restarted_notifier_is_watched_again_and_the_gap_filled(stream: Stream) -> None:
    stream.seed("o1", 2)
    conn, sent = stream.connect()
    await stream.hub.subscribe(conn, "o1", since_seq=None)
    await settle()

    stream.notifier.restart()
    stream.emit("o1", 3)  # published to a notifier that no longer knows the replica
    await until(lambda: seqs(sent) == [3])
    stream.emit("o1", 4)

    await until(lambda: seqs(sent) == [3, 4])
