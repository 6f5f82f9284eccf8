"""Unit tests for collect_quotes: every venue asked at once, each failure kept per venue."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from core.errors import InsufficientLiquidity, RetryableError, VenueTimeout
from gateways.quotes import collect_quotes
from tests.kit.clock import FakeClock
from tests.kit.fakes import Call, FakeVenue, SlowVenue
from tests.kit.orders import ONE_SOL, SOL, USDC


@dataclass
class Venues:
    calls: list[Call]
    clock: FakeClock
    raydium: FakeVenue
    meteora: FakeVenue


@pytest.fixture
def world() -> Venues:
    calls: list[Call] = []
    clock = FakeClock()
    return Venues(calls=calls, clock=clock,
                  raydium=FakeVenue("raydium", 150_000_000, calls, clock),
                  meteora=FakeVenue("meteora", 149_500_000, calls, clock))


async def test_collect_quotes_reports_a_slow_venue_as_a_timeout(world: Venues) -> None:
    slow = SlowVenue("slowswap", 160_000_000, world.calls, world.clock)

    quotes, errors = await collect_quotes([slow, world.raydium], SOL, USDC, ONE_SOL, 0.05)

    assert [q.venue for q in quotes] == ["raydium"]
    assert set(errors) == {"slowswap"}
    error = errors["slowswap"]
    assert isinstance(error, VenueTimeout)
    assert error.retryable
    assert error.venue == "slowswap"
    assert "timed out" in error.message


async def test_collect_quotes_keeps_dexec_errors_and_wraps_others(world: Venues) -> None:
    refusal = InsufficientLiquidity("too shallow", venue="raydium")
    world.raydium.quote_failures = [refusal]
    world.meteora.quote_failures = [ConnectionResetError("peer reset")]

    quotes, errors = await collect_quotes([world.raydium, world.meteora], SOL, USDC, ONE_SOL,
                                          1.0)

    assert quotes == []
    assert errors["raydium"] is refusal
    wrapped = errors["meteora"]
    assert type(wrapped) is RetryableError
    assert wrapped.venue == "meteora"
    assert "peer reset" in wrapped.message
