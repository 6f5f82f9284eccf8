"""Unit tests for the admission limits: open orders in all and per account, and the rate."""

from __future__ import annotations

import pytest

from core.errors import Overloaded
from core.limits import AccountRateLimit, OpenOrders


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
