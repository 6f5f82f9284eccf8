"""Unit tests for the simulated venue servers' behaviour: their latency and injected failures."""

from __future__ import annotations

import pytest

from core.errors import VenueTimeout, VenueUnavailable
from gateways.simulated.server import Faults, VenueBehaviour


def behaviour(**faults: object) -> VenueBehaviour:
    return VenueBehaviour("raydium", quote_latency_ms=(50, 200), swap_latency_ms=(2000, 3000),
                          faults=Faults(**faults), seed=7)  # type: ignore[arg-type]


def test_latency_is_drawn_within_the_venue_bounds() -> None:
    venue = behaviour()
    quotes = [venue.quote_delay_s() for _ in range(200)]
    landings = [venue.landing_delay_s() for _ in range(200)]
    assert all(0.05 <= d <= 0.2 for d in quotes) and len(set(quotes)) > 100
    assert all(2.0 <= d <= 3.0 for d in landings)
    venue.quote_latency_ms, venue.swap_latency_ms = (0, 0), (0, 0)
    assert venue.quote_delay_s() == 0.0 and venue.landing_delay_s() == 0.0


def test_injected_failures_count_down_and_a_down_venue_always_fails() -> None:
    venue = behaviour(fail_next=2)
    for _ in range(2):
        with pytest.raises(VenueUnavailable, match="injected"):
            venue.check()
    venue.check()  # the third call goes through
    with pytest.raises(VenueTimeout):
        behaviour(timeout_rate=1.0).check()
    down = behaviour(down=True)
    for _ in range(3):
        with pytest.raises(VenueUnavailable, match="down"):
            down.check()


def test_the_same_seed_draws_the_same_latencies() -> None:
    one, two = behaviour(), behaviour()
    assert [one.quote_delay_s() for _ in range(5)] == [two.quote_delay_s() for _ in range(5)]
