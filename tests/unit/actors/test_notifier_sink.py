"""A worker's NotifierSink: prompt while any order is watched, quiet while none is."""

from __future__ import annotations

import asyncio

import pytest

from actors import notifier
from actors.event_hub import Event, EventHub
from actors.notifier import NotifierSink
from tests.kit.fakes import ActorMethod
from tests.kit.loop import until
from tests.kit.orders import frame


class FakeNotifier:
    """The Notifier actor's publish and watched, over a real EventHub; records publishes."""

    def __init__(self, *, watched_fails: bool = False) -> None:
        self.hub = EventHub()
        self.published: list[list[Event]] = []
        self._watched_fails = watched_fails
        self.publish = ActorMethod(self._publish)
        self.watched = ActorMethod(self._watched)

    async def _publish(self, events: list[Event]) -> bool:
        self.published.append(list(events))
        self.hub.publish(events)
        return self.hub.watched

    async def _watched(self, timeout_s: float) -> bool:
        if self._watched_fails:
            raise ConnectionError("the notifier is restarting")
        return await self.hub.until_watched(timeout_s)


class RawEvent:
    def __init__(self, body: Event) -> None:
        self.body = body

    def to_json(self) -> Event:
        return self.body


def publish(sink: NotifierSink, body: Event) -> None:
    sink.publish(RawEvent(body))  # type: ignore[arg-type]


async def test_while_nothing_is_watched_events_go_out_in_few_calls() -> None:
    fake = FakeNotifier()
    sink = NotifierSink(fake)
    publish(sink, frame("a", 1))
    await until(lambda: sink.quiet)  # the first answer: nothing is watched

    for seq in range(2, 32):  # 30 events over ~0.3 s: 15 calls if it stayed prompt
        publish(sink, frame("a", seq))
        await asyncio.sleep(0.01)
    await until(lambda: sum(map(len, fake.published)) == 31, timeout_s=3.0)

    assert [e["seq"] for batch in fake.published for e in batch] == list(range(1, 32))
    assert len(fake.published) <= 4


async def test_once_an_order_is_watched_what_the_sink_holds_goes_out_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notifier, "QUIET_INTERVAL_S", 30.0)  # quiet would hold it 30 s
    fake = FakeNotifier()
    sink = NotifierSink(fake)
    publish(sink, frame("a", 1))
    await until(lambda: sink.quiet)
    publish(sink, frame("b", 2))

    fake.hub.watch("r1", ["b"])

    async with asyncio.timeout(2.0):
        assert await fake.hub.take("r1", 5.0) == [frame("b", 2)]
    assert not sink.quiet
    publish(sink, frame("b", 3))  # prompt again
    async with asyncio.timeout(2.0):
        assert await fake.hub.take("r1", 5.0) == [frame("b", 3)]


async def test_a_notifier_that_cannot_say_whether_anyone_watches_gets_events_promptly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notifier, "QUIET_INTERVAL_S", 30.0)
    fake = FakeNotifier(watched_fails=True)
    sink = NotifierSink(fake)

    publish(sink, frame("a", 1))
    await until(lambda: len(fake.published) == 1)
    await until(lambda: not sink.quiet and sink._listening is None)
    publish(sink, frame("a", 2))

    await until(lambda: len(fake.published) >= 2, timeout_s=2.0)
