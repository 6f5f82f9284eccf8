"""Unit tests for the Coalescer: concurrent single calls become batched calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from actors.batching import Coalescer, as_completed, concatenated, shared
from actors.telemetry import BatchStats
from core.errors import InvalidInput, VenueUnavailable
from tests.kit.clock import FakeClock
from tests.kit.loop import until


class Recorder:
    """A batched call that doubles numbers, fails odd negatives, and records each batch."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        return [InvalidInput(f"bad {i}") if i < 0 else i * 2 for i in items]


async def test_calls_made_together_travel_as_one_batch() -> None:
    call = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(call)
    assert await asyncio.gather(*(coalescer(i) for i in range(10))) == [
        i * 2 for i in range(10)
    ]
    assert call.batches == [list(range(10))]


async def test_a_lone_call_is_sent_at_once_as_a_batch_of_one() -> None:
    call = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(call)
    assert await coalescer(4) == 8
    assert await coalescer(5) == 10
    assert call.batches == [[4], [5]]


async def test_each_item_keeps_its_own_error() -> None:
    coalescer: Coalescer[int, int] = Coalescer(Recorder())
    results = await asyncio.gather(coalescer(1), coalescer(-1), coalescer(2),
                                   return_exceptions=True)
    assert results[0] == 2 and results[2] == 4
    assert isinstance(results[1], InvalidInput) and results[1].message == "bad -1"


async def test_a_failed_batch_call_fails_every_item_in_it() -> None:
    async def broken(items: list[int]) -> list[int]:
        raise VenueUnavailable("down")

    coalescer: Coalescer[int, int] = Coalescer(broken)
    results = await asyncio.gather(*(coalescer(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, VenueUnavailable) for r in results)


async def test_a_batch_with_the_wrong_number_of_answers_is_an_error() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    coalescer: Coalescer[int, int] = Coalescer(short)
    results = await asyncio.gather(coalescer(1), coalescer(2), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_items_wait_for_a_batch_in_flight_and_then_go_together() -> None:
    gate = asyncio.Event()
    call = Recorder(gate)
    coalescer: Coalescer[int, int] = Coalescer(call, max_in_flight=1)
    first = asyncio.ensure_future(coalescer(0))
    await asyncio.sleep(0.01)
    assert call.batches == [[0]]
    later = [asyncio.ensure_future(coalescer(i)) for i in range(1, 6)]
    await asyncio.sleep(0.01)
    assert call.batches == [[0]], "nothing more is sent while the one batch allowed travels"
    gate.set()
    assert await first == 0
    assert await asyncio.gather(*later) == [2, 4, 6, 8, 10]
    assert call.batches == [[0], [1, 2, 3, 4, 5]]


async def test_batches_are_capped_at_max_batch() -> None:
    call = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(call, max_batch=4)
    assert await asyncio.gather(*(coalescer(i) for i in range(10))) == [
        i * 2 for i in range(10)
    ]
    assert [len(b) for b in call.batches] == [4, 4, 2]


async def test_streamed_answers_arrive_as_each_item_finishes() -> None:
    release: dict[int, asyncio.Event] = {i: asyncio.Event() for i in range(3)}

    async def slow(i: int) -> int:
        await release[i].wait()
        if i == 1:
            raise VenueUnavailable("one failed")
        return i * 10

    def streamed(items: list[int]) -> AsyncIterator[list[tuple[int, int | BaseException]]]:
        return as_completed([slow(i) for i in items], gather_s=0)

    coalescer: Coalescer[int, int] = Coalescer(streamed)
    calls = [asyncio.ensure_future(coalescer(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    release[2].set()
    assert await calls[2] == 20
    assert not calls[0].done(), "a slow item does not hold back a fast one, nor the reverse"
    release[1].set()
    with pytest.raises(VenueUnavailable):
        await calls[1]
    release[0].set()
    assert await calls[0] == 0


async def test_concatenated_and_shared_split_the_answers_back() -> None:
    async def lookup(keys: list[str]) -> list[str]:
        return [k.upper() for k in keys]

    asked = 0

    async def height() -> int:
        nonlocal asked
        asked += 1
        return 42

    lists: Coalescer[list[str], list[str]] = Coalescer(concatenated(lookup))
    assert await asyncio.gather(lists(["a", "b"]), lists([]), lists(["c"])) == [
        ["A", "B"], [], ["C"]
    ]
    heights: Coalescer[None, int] = Coalescer(shared(height))
    assert await asyncio.gather(*(heights(None) for _ in range(5))) == [42] * 5
    assert asked == 1


class Sink:
    """Collects what a BatchStats hands over: (site, calls, items, wait_s, call_s)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, int, float, float]] = []

    def __call__(self, site: str, calls: int, items: int, wait_s: float, call_s: float
                 ) -> None:
        self.rows.append((site, calls, items, wait_s, call_s))


def test_batch_stats_sum_per_site_and_hand_over_every_interval() -> None:
    sink, clock = Sink(), FakeClock()
    stats = BatchStats(sink, every_s=5.0, clock=clock)
    stats.record("writes", 10, 0.004, 0.020)
    stats.record("writes", 30, 0.006, 0.040)
    stats.record("quote", 1, 0.0, 0.010)
    assert sink.rows == []  # nothing before the interval is up
    clock.advance(5.0)
    stats.record("quote", 3, 0.002, 0.030)
    assert sorted(sink.rows) == [("quote", 2, 4, pytest.approx(0.002), pytest.approx(0.040)),
                                 ("writes", 2, 40, pytest.approx(0.010), pytest.approx(0.060))]
    clock.advance(2.0)
    stats.record("writes", 5, 0.0, 0.001)
    stats.flush()  # the sums start again after each hand-over
    assert sink.rows[-1] == ("writes", 1, 5, 0.0, pytest.approx(0.001))


async def test_a_coalescer_records_each_batch_with_its_wait_and_round_trip() -> None:
    sink = Sink()
    stats = BatchStats(sink, every_s=3600.0)

    async def slow(items: list[int]) -> list[int]:
        await asyncio.sleep(0.02)
        return items

    coalescer: Coalescer[int, int] = Coalescer(slow, window_s=0.01, site="s", stats=stats)
    await asyncio.gather(*(coalescer(i) for i in range(7)))
    await coalescer(7)
    stats.flush()
    ((site, calls, items, wait_s, call_s),) = sink.rows
    assert (site, calls, items) == ("s", 2, 8)
    assert 0.015 <= wait_s < 0.2  # each batch waited out its 10 ms window
    assert 0.035 <= call_s < 0.4  # two calls of 20 ms each


async def test_a_failed_batch_is_recorded_too_and_no_site_records_nothing() -> None:
    sink = Sink()
    stats = BatchStats(sink, every_s=3600.0)

    async def broken(items: list[int]) -> list[int]:
        raise VenueUnavailable("down")

    failing: Coalescer[int, int] = Coalescer(broken, site="down", stats=stats)
    unnamed: Coalescer[int, int] = Coalescer(Recorder(), stats=stats)
    with pytest.raises(VenueUnavailable):
        await failing(1)
    assert await unnamed(2) == 4
    stats.flush()
    assert [(r[0], r[1], r[2]) for r in sink.rows] == [("down", 1, 1)]


async def test_batch_stats_hand_over_a_burst_even_when_no_batch_follows() -> None:
    sink = Sink()
    stats = BatchStats(sink, every_s=0.05)
    coalescer: Coalescer[int, int] = Coalescer(Recorder(), site="burst", stats=stats)
    await asyncio.gather(*(coalescer(i) for i in range(5)))
    assert sink.rows == []
    await until(lambda: bool(sink.rows), timeout_s=1.0)  # the hand-over timer of every_s
    assert [(r[0], r[1], r[2]) for r in sink.rows] == [("burst", 1, 5)]
