"""Unit tests for the admission limits: open orders in all and per account, and the rate."""

from __future__ import annotations

import pytest

from core.errors import AtCapacity, Overloaded
from core.limits import AccountRateLimit, LatencyAdmission, OpenOrders


def test_the_total_bound_refuses_and_takes_nothing() -> None:
    book = OpenOrders(bound=2)
    book.reserve("a")
    book.reserve("b")
    with pytest.raises(Overloaded, match="2 orders are open, the limit is 2"):
        book.reserve("c")
    assert len(book) == 2 and book.of("c") == 0


def test_the_account_bound_is_per_account() -> None:
    book = OpenOrders(per_account=1)
    book.reserve("a")
    with pytest.raises(Overloaded, match="'a' has 1 open orders"):
        book.reserve("a")
    book.reserve("b")
    assert (len(book), book.of("a"), book.of("b")) == (2, 1, 1)


def test_a_place_is_held_until_its_order_closes() -> None:
    book = OpenOrders(per_account=1)
    book.reserve("a")
    book.hold("o-1", "a")
    book.close("o-1")
    book.close("o-1")  # closing twice frees one place, not two
    assert len(book) == 0
    book.reserve("a")
    assert book.of("a") == 1


def test_release_gives_back_a_reservation() -> None:
    book = OpenOrders(bound=1)
    book.reserve("a")
    book.release("a")
    assert len(book) == 0 and book.of("a") == 0
    book.reserve("a")


def test_hold_of_an_order_already_open_gives_the_reservation_back() -> None:
    book = OpenOrders()
    book.adopt("o-1", "a")
    book.reserve("a")
    book.hold("o-1", "a")
    assert len(book) == 1


def test_adopt_counts_past_the_bounds_once() -> None:
    book = OpenOrders(bound=1, per_account=1)
    for order_id in ("o-1", "o-2", "o-2"):
        book.adopt(order_id, "a")
    assert (len(book), book.of("a")) == (2, 2)
    with pytest.raises(Overloaded):
        book.reserve("b")


def test_the_rate_limit_is_a_sliding_minute_per_account() -> None:
    now = [0.0]
    rate = AccountRateLimit(2, clock=lambda: now[0])
    for _ in range(2):
        rate.check("a")
        rate.record("a")
    with pytest.raises(Overloaded) as refused:
        rate.check("a")
    assert refused.value.retry_after_s == 60
    rate.check("b")
    now[0] = 60.0
    rate.check("a")


def test_caps_are_read_in_the_network_s_tokens_and_unknown_ones_refused() -> None:
    from decimal import Decimal

    from core.errors import InvalidInput, LimitExceeded
    from core.limits import amount_caps
    from core.settings import Settings
    from core.tokens import TokenRegistry
    from serve.errors import error_status

    caps = amount_caps(Settings(max_order_amounts={"SOL": Decimal("2.5")},
                                max_daily_amounts={"usdc": Decimal(1000)}))
    tokens = TokenRegistry()
    assert caps.per_order == {tokens.resolve("SOL").mint: 2_500_000_000}
    assert caps.per_day == {tokens.resolve("USDC").mint: 1_000_000_000}
    with pytest.raises(InvalidInput, match="RAY"):
        amount_caps(Settings(network="devnet", max_order_amounts={"RAY": Decimal(1)}))
    with pytest.raises(InvalidInput, match="cap for USDC"):
        amount_caps(Settings(max_daily_amounts={"USDC": Decimal("0.0000001")}))
    assert error_status(LimitExceeded("over the cap")) == 403


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_for(admission: LatencyAdmission, clock: Clock, seconds: int, per_s: int,
            duration_s: float) -> None:
    """Let `per_s` orders a second finish, each after `duration_s`, for `seconds`."""
    for _ in range(seconds):
        for _ in range(per_s):
            admission.finished(duration_s)
        clock.now += 1.0


def test_a_cold_engine_admits_up_to_the_floor() -> None:
    admission = LatencyAdmission(0.5, floor=10, clock=Clock())
    assert admission.bound() == 10
    admission.check(9)
    with pytest.raises(AtCapacity) as refused:
        admission.check(10)
    assert refused.value.retry_after_s >= 1


def test_the_bound_is_throughput_times_baseline_plus_budget() -> None:
    clock = Clock()
    admission = LatencyAdmission(0.5, floor=10, clock=clock)
    run_for(admission, clock, 10, per_s=200, duration_s=0.1)
    assert admission.throughput == pytest.approx(200, rel=0.01)
    assert admission.baseline_s == pytest.approx(0.1)
    # 200/s x (0.1 s + 0.5 s): 120 in flight is what finishes within the budget.
    assert admission.bound() == 120
    admission.check(119)
    with pytest.raises(AtCapacity) as refused:
        admission.check(400)
    # 281 orders past the bound finish at 200/s: retry in 2 s.
    assert refused.value.retry_after_s == 2
    assert "at capacity" in refused.value.message


def test_slow_venues_raise_the_baseline_and_so_the_bound() -> None:
    """Orders that take 3 s because the venues do are not the engine's queueing."""
    clock = Clock()
    admission = LatencyAdmission(0.5, floor=10, clock=clock)
    run_for(admission, clock, 10, per_s=100, duration_s=3.0)
    assert admission.bound() == 350
    admission.check(300)  # 100/s x 3 s is in flight without any queueing: admitted


def test_the_baseline_is_the_lowest_recent_window_not_the_loaded_ones() -> None:
    clock = Clock()
    admission = LatencyAdmission(1.0, floor=1, history=5, clock=clock)
    run_for(admission, clock, 2, per_s=50, duration_s=0.2)
    run_for(admission, clock, 3, per_s=50, duration_s=2.0)  # overloaded: orders waited
    assert admission.baseline_s == pytest.approx(0.2)
    run_for(admission, clock, 3, per_s=50, duration_s=2.0)  # the quiet windows aged out
    assert admission.baseline_s == pytest.approx(2.0)


def test_an_idle_engine_forgets_its_rate_and_falls_back_to_the_floor() -> None:
    clock = Clock()
    admission = LatencyAdmission(0.5, floor=10, clock=clock)
    run_for(admission, clock, 12, per_s=500, duration_s=0.1)
    assert admission.bound() == 300
    clock.now += 60
    assert admission.throughput == 0
    assert admission.bound() == 10


def test_a_budget_of_zero_is_no_bound() -> None:
    admission = LatencyAdmission(0, floor=1, clock=Clock())
    assert admission.bound() is None
    admission.check(10**9)


def test_at_capacity_is_an_overload_with_its_own_code() -> None:
    error = AtCapacity("full", retry_after_s=3)
    assert isinstance(error, Overloaded)
    assert error.code == "at_capacity"


def test_the_baseline_is_a_median_so_varied_confirmations_are_not_refused() -> None:
    """Orders that take 0.4-2.0 s (a live chain's confirmations) average 1.2 s unloaded: the
    bound must hold that many in flight, which the quickest order (0.4 s) would not."""
    clock = Clock()
    admission = LatencyAdmission(0.5, floor=1, clock=clock)
    for _ in range(10):
        for k in range(100):
            admission.finished(0.4 + 1.6 * k / 99)
        clock.now += 1.0
    assert admission.baseline_s == pytest.approx(1.2, abs=0.01)
    admission.check(int(100 * 1.2))  # 100/s x 1.2 s in flight, nothing queued: admitted


def test_failed_orders_count_for_the_rate_but_not_for_the_baseline() -> None:
    clock = Clock()
    admission = LatencyAdmission(0.5, floor=1, clock=clock)
    for _ in range(10):
        for _ in range(50):
            admission.finished(None)  # refused by the venue at once: no duration
            admission.finished(2.0)
        clock.now += 1.0
    assert admission.throughput == pytest.approx(100, rel=0.01)
    assert admission.baseline_s == pytest.approx(2.0)
