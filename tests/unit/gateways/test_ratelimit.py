"""Unit tests for TokenBucket, a venue's rate limit, on a fake clock (no real waiting)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateways import ratelimit
from gateways.ratelimit import TokenBucket
from tests.kit.clock import FakeClock


class _AsyncioOnTheClock:
    """The asyncio module as gateways.ratelimit sees it, whose sleep moves the fake clock.

    The sleep yields to the loop like a real one, so concurrent callers interleave.
    """

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, seconds: float) -> None:
        await self._clock.sleep(seconds)  # fails the test if the bucket never settles
        await asyncio.sleep(0)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(start=1_000.0)
    monkeypatch.setattr(ratelimit, "asyncio", _AsyncioOnTheClock(fake))
    return fake


async def test_rate_zero_never_waits(clock: FakeClock) -> None:
    bucket = TokenBucket(0, clock=clock)
    for _ in range(1_000):
        await bucket.acquire()
    assert clock.sleeps == []


async def test_a_burst_up_to_capacity_passes_then_the_next_call_waits_a_token(
        clock: FakeClock) -> None:
    bucket = TokenBucket(10, burst=5, clock=clock)
    for _ in range(5):
        await bucket.acquire()
    assert clock.sleeps == []

    await bucket.acquire()
    assert clock.sleeps == [pytest.approx(0.1)]  # (1 - 0 tokens) / 10 per second
    assert clock.now == pytest.approx(1_000.1)


async def test_the_wait_covers_only_the_missing_part_of_a_token(clock: FakeClock) -> None:
    bucket = TokenBucket(2, burst=1, clock=clock)
    await bucket.acquire()
    clock.advance(0.25)  # half a token came back
    await bucket.acquire()
    assert clock.sleeps == [pytest.approx(0.25)]  # (1 - 0.5) / 2


async def test_the_default_burst_is_one_second_of_calls(clock: FakeClock) -> None:
    bucket = TokenBucket(4, clock=clock)
    for _ in range(4):
        await bucket.acquire()
    assert clock.sleeps == []
    await bucket.acquire()
    assert clock.sleeps == [pytest.approx(0.25)]

    slow = TokenBucket(0.5, clock=clock)  # less than one a second: still one call at once
    clock.sleeps.clear()
    await slow.acquire()
    assert clock.sleeps == []
    await slow.acquire()
    assert clock.sleeps == [pytest.approx(2.0)]


async def test_tokens_refill_with_time_up_to_capacity_and_never_beyond(
        clock: FakeClock) -> None:
    bucket = TokenBucket(10, burst=3, clock=clock)
    for _ in range(3):
        await bucket.acquire()
    clock.advance(0.2)  # two tokens back
    for _ in range(2):
        await bucket.acquire()
    assert clock.sleeps == []

    clock.advance(3_600)  # an idle hour refills the bucket, no more
    for _ in range(3):
        await bucket.acquire()
    assert clock.sleeps == []
    await bucket.acquire()
    assert clock.sleeps == [pytest.approx(0.1)]


async def test_callers_are_served_in_arrival_order_one_token_apart(clock: FakeClock) -> None:
    bucket = TokenBucket(1, burst=1, clock=clock)
    served: list[tuple[int, float]] = []

    async def call(k: int) -> None:
        await bucket.acquire()
        served.append((k, clock.now))

    await asyncio.gather(*(call(k) for k in range(5)))
    assert [k for k, _ in served] == [0, 1, 2, 3, 4]
    assert [at - 1_000.0 for _, at in served] == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])
