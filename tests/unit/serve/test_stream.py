"""Unit tests for the replica's StreamHub: history replayed, then live events, gapless."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from actors.event_hub import EventHub
from core.orders import Order, OrderEvent, OrderStatus
from serve.stream import Connection, Outbox, StreamHub
from tests.kit.loop import settle, until
from tests.kit.orders import Frame, event, frame, make_order


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
        return make_order(last.status, last.attempt, last.seq, order_id=order_id,
                          updated_at=last.at, events=tuple(events) if with_history else ())

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


async def test_an_outbox_past_its_limit_marks_the_connection_to_close_and_keeps_order() -> None:
    outbox = Outbox(limit=2)
    outbox.put({"n": 1})
    outbox.put({"n": 2})
    assert not outbox.overflowed.is_set()

    outbox.put({"n": 3})  # the client fell behind
    outbox.put({"n": 4})

    assert outbox.overflowed.is_set()
    assert [await outbox.get(), await outbox.get()] == [{"n": 1}, {"n": 2}]
