"""Unit tests for the order state machine: the transition table and Order.apply."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import IllegalTransition
from core.orders import (
    CANCELLABLE,
    TERMINAL,
    TRANSITIONS,
    Change,
    Order,
    OrderEvent,
    OrderStatus,
    OrderType,
    TimeInForce,
    Trigger,
    next_status,
)
from core.trigger_book import Side
from tests.kit.orders import T0, confirming_changes, make_order, make_quote

ROWS = sorted(TRANSITIONS.items())
NOT_IN_TABLE = sorted(
    (status, trigger)
    for status in OrderStatus
    for trigger in Trigger
    if (status, trigger) not in TRANSITIONS
)


def applied(order: Order, change: Change, at: datetime = T0) -> tuple[Order, OrderEvent]:
    result = order.apply(change, at)
    assert result is not None, f"{change.trigger} on {order.status} was treated as a repeat"
    return result


# --- the table, row by row -----------------------------------------------------------------


def test_table_covers_only_known_statuses_and_nothing_leaves_terminal() -> None:
    assert {OrderStatus.CONFIRMED, OrderStatus.FAILED, OrderStatus.SIMULATED,
            OrderStatus.CANCELLED, OrderStatus.EXPIRED} == TERMINAL
    assert not [key for key in TRANSITIONS if key[0] in TERMINAL]
    # Every non-terminal status can fail, and every status is reachable from pending.
    for status in OrderStatus:
        if status not in TERMINAL:
            assert TRANSITIONS[(status, Trigger.FAIL)] is OrderStatus.FAILED
    reachable = {OrderStatus.PENDING}
    for _ in OrderStatus:
        reachable |= {to for (frm, _t), to in TRANSITIONS.items() if frm in reachable}
    assert reachable == set(OrderStatus)


@pytest.mark.parametrize(("key", "target"), ROWS, ids=[f"{s}-{t}" for (s, t), _ in ROWS])
def test_every_row_of_the_table_applies(
    key: tuple[OrderStatus, Trigger], target: OrderStatus
) -> None:
    status, trigger = key
    order = make_order(status, attempt=1, seq=4)
    attempt = 2 if trigger is Trigger.RETRY else 1
    at = T0 + timedelta(seconds=5)

    updated, event = applied(order, Change(trigger, attempt, error="boom"), at)

    assert next_status(status, trigger) is target
    assert updated.status is target
    assert updated.seq == 5
    assert updated.attempt == attempt
    assert updated.updated_at == at
    assert updated.created_at == T0
    assert event.order_id == "order-1"
    assert event.seq == 5
    assert event.status is target
    assert event.attempt == attempt
    assert event.at == at
    assert event.error == "boom"
    # The original is a frozen value: apply returns a new order.
    assert order.status is status
    assert order.seq == 4


@pytest.mark.parametrize(("key", "target"), ROWS, ids=[f"{s}-{t}" for (s, t), _ in ROWS])
def test_applying_the_same_change_twice_is_a_no_op(
    key: tuple[OrderStatus, Trigger], target: OrderStatus
) -> None:
    status, trigger = key
    change = Change(trigger, 2 if trigger is Trigger.RETRY else 1, venue="raydium")
    updated, _ = applied(make_order(status, attempt=1), change)

    assert updated.apply(change, T0 + timedelta(seconds=1)) is None


@pytest.mark.parametrize(
    ("status", "trigger"), NOT_IN_TABLE, ids=[f"{s}-{t}" for s, t in NOT_IN_TABLE]
)
def test_every_pair_outside_the_table_is_illegal(status: OrderStatus, trigger: Trigger) -> None:
    order = make_order(status, attempt=1, seq=3)
    # A later attempt, so that nothing here can be mistaken for a repeated change.
    with pytest.raises(IllegalTransition) as info:
        order.apply(Change(trigger, attempt=2), T0)
    assert str(trigger) in info.value.message
    assert str(status) in info.value.message
    with pytest.raises(IllegalTransition):
        next_status(status, trigger)


@pytest.mark.parametrize("status", sorted(OrderStatus))
@pytest.mark.parametrize("attempt", [0, 1, 2])
def test_retry_for_an_attempt_already_reached_is_a_no_op(status: OrderStatus,
                                                         attempt: int) -> None:
    order = make_order(status, attempt=2, seq=6)
    assert order.apply(Change(Trigger.RETRY, attempt, error="late"), T0) is None


def test_repeat_needs_the_same_attempt() -> None:
    building, _ = applied(make_order(OrderStatus.ROUTING, attempt=1), Change(
        Trigger.ROUTE_CHOSEN, 1, venue="raydium"))
    # Same trigger, same attempt: a repeat.
    assert building.apply(Change(Trigger.ROUTE_CHOSEN, 1, venue="meteora"), T0) is None
    # Same trigger, another attempt: not a repeat, and building cannot take it.
    with pytest.raises(IllegalTransition):
        building.apply(Change(Trigger.ROUTE_CHOSEN, 2, venue="meteora"), T0)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_orders_refuse_every_new_change(terminal: OrderStatus) -> None:
    order = make_order(terminal, attempt=1, seq=6)
    for trigger in Trigger:
        change = Change(trigger, attempt=2)
        with pytest.raises(IllegalTransition):
            order.apply(change, T0)


# --- what an applied change carries ----------------------------------------------------------


def test_a_full_life_has_gapless_seq_and_events_carry_their_facts() -> None:
    quotes = (make_quote("raydium", 150_000_000), make_quote("meteora", 149_000_000))
    order = make_order()
    events: list[OrderEvent] = []
    for step in confirming_changes(quotes):
        order, event = applied(order, step)
        events.append(event)

    assert [e.seq for e in events] == [2, 3, 4, 5]
    assert [e.status for e in events] == [
        OrderStatus.ROUTING, OrderStatus.BUILDING, OrderStatus.SUBMITTED, OrderStatus.CONFIRMED,
    ]
    routed = events[1]
    assert routed.venue == "raydium"
    assert routed.quotes is not None
    assert [q["venue"] for q in routed.quotes] == ["raydium", "meteora"]
    assert all("payload" not in q for q in routed.quotes)
    assert routed.quotes[0]["amount_out"] == "150000000"
    assert events[2].signature == "sig-1"
    assert events[0].venue is None and events[0].quotes is None and events[0].signature is None
    assert order.status is OrderStatus.CONFIRMED
    assert order.is_terminal
    assert order.seq == 5
    assert order.venue == "raydium"
    assert order.quotes == quotes
    assert order.signature == "sig-1"
    assert order.amount_out == 149_900_000
    assert order.price == Decimal("149.9")
    assert order.failure_reason is None
    assert order.events == ()


def test_fail_sets_failure_reason_and_keeps_earlier_facts() -> None:
    order = make_order(OrderStatus.SUBMITTED, attempt=2, seq=7)
    order = replace(order, venue="meteora", signature="sig-2")

    failed, event = applied(order, Change(Trigger.FAIL, 2, error="slippage exceeded: pool pays 1",
                                          error_class="terminal"))

    assert failed.status is OrderStatus.FAILED
    assert failed.failure_reason == "slippage exceeded: pool pays 1"
    assert failed.venue == "meteora"
    assert failed.signature == "sig-2"
    assert event.error == "slippage exceeded: pool pays 1"
    assert event.error_class == "terminal"
    assert event.seq == 8


def test_retry_does_not_set_failure_reason_but_its_event_says_why() -> None:
    order = make_order(OrderStatus.BUILDING, attempt=1, seq=4)
    retried, event = applied(order, Change(Trigger.RETRY, 2, error="no route",
                                           error_class="retryable"))
    assert retried.status is OrderStatus.ROUTING
    assert retried.attempt == 2
    assert retried.failure_reason is None
    assert event.error == "no route"
    assert event.error_class == "retryable"


def test_event_json_has_only_the_fields_that_apply() -> None:
    order = make_order(OrderStatus.SUBMITTED, attempt=1, seq=4)
    _, event = applied(order, Change(Trigger.TX_CONFIRMED, 1, venue="raydium",
                                     signature="sig", amount_out=10**30,
                                     price=Decimal("150.25")))
    data = event.to_json()
    assert data == {
        "type": "order", "order_id": "order-1", "seq": 5, "status": "confirmed",
        "at": T0.isoformat(), "attempt": 1, "venue": "raydium", "signature": "sig",
        "amount_out": str(10**30), "price": "150.25",
    }


# --- property: terminal is forever, seq is gapless -------------------------------------------

changes = st.builds(
    Change,
    trigger=st.sampled_from(list(Trigger)),
    attempt=st.integers(min_value=0, max_value=4),
    error=st.sampled_from([None, "boom"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(changes, max_size=40))
def test_no_sequence_of_changes_leaves_a_terminal_status(sequence: list[Change]) -> None:
    order = make_order()
    terminal_reached: OrderStatus | None = None
    applied_count = 0
    for change in sequence:
        before = order
        try:
            result = order.apply(change, T0)
        except IllegalTransition:
            continue
        if result is None:
            continue
        order, event = result
        applied_count += 1
        assert terminal_reached is None, f"{change.trigger} moved a {terminal_reached} order"
        assert event.seq == before.seq + 1
        assert order.seq == event.seq
        assert event.status is order.status
        assert order.status is TRANSITIONS[(before.status, change.trigger)]
        if order.is_terminal:
            terminal_reached = order.status
    assert order.seq == 1 + applied_count
    if terminal_reached is not None:
        assert order.status is terminal_reached


# --- limit and stop orders -------------------------------------------------------------------


def _conditional(order_type: OrderType, *, limit: str | None = None, stop: str | None = None,
                 tif: TimeInForce = TimeInForce.GTC) -> Order:
    return replace(make_order(OrderStatus.OPEN, seq=2), order_type=order_type,
                   limit_price=Decimal(limit) if limit else None,
                   trigger_price=Decimal(stop) if stop else None, time_in_force=tif)


def test_only_unsigned_orders_can_be_cancelled() -> None:
    assert {OrderStatus.PENDING, OrderStatus.OPEN, OrderStatus.ROUTING} == CANCELLABLE


def test_a_triggered_stop_records_when_and_its_event_carries_the_quote_that_crossed() -> None:
    stop = _conditional(OrderType.STOP, stop="140")
    quote = make_quote(amount_out=139_000_000)
    at = T0 + timedelta(seconds=3)
    routing, event = applied(stop, Change(Trigger.PRICE_REACHED, 1, observed=quote,
                                          observed_price=Decimal("139")), at)
    assert routing.status is OrderStatus.ROUTING and routing.triggered_at == at
    assert event.quotes == (quote.public(),) and event.price == Decimal("139")
    assert routing.price is None and routing.quotes == ()  # nothing executed at that price
    # A limit order is set off the same way, with no trigger time of its own.
    limit = _conditional(OrderType.LIMIT, limit="150")
    routed, _ = applied(limit, Change(Trigger.PRICE_REACHED, 1))
    assert routed.triggered_at is None


@pytest.mark.parametrize("trigger", [Trigger.CANCEL, Trigger.EXPIRE])
def test_cancel_and_expiry_keep_their_reason(trigger: Trigger) -> None:
    ended, event = applied(_conditional(OrderType.LIMIT, limit="150"),
                           Change(trigger, 0, error="why"))
    assert ended.is_terminal and ended.failure_reason == "why" and event.error == "why"


def test_what_each_order_waits_for_and_accepts() -> None:
    limit = _conditional(OrderType.LIMIT, limit="150")
    assert limit.rests and limit.resting_side() == (Side.AT_OR_ABOVE, Decimal(150))
    assert limit.accepts(Decimal(150)) and not limit.accepts(Decimal("149.99"))

    stop = _conditional(OrderType.STOP, stop="140")
    assert stop.resting_side() == (Side.AT_OR_BELOW, Decimal(140))
    assert stop.accepts(Decimal(140)) and not stop.accepts(Decimal("140.01"))
    assert replace(stop, triggered_at=T0).resting_side() is None  # a market order now
    assert replace(stop, triggered_at=T0).accepts(Decimal(500))

    stop_limit = _conditional(OrderType.STOP, stop="140", limit="139")
    assert stop_limit.resting_side() == (Side.AT_OR_BELOW, Decimal(140))
    assert not stop_limit.accepts(Decimal("138"))  # under its limit
    triggered = replace(stop_limit, triggered_at=T0)
    assert triggered.resting_side() == (Side.AT_OR_ABOVE, Decimal(139))
    assert triggered.accepts(Decimal("141")) and not triggered.accepts(Decimal("138.9"))

    assert not _conditional(OrderType.LIMIT, limit="1", tif=TimeInForce.IOC).rests
    market = make_order()
    assert not market.rests and market.resting_side() is None and market.accepts(Decimal(0))


def test_a_limit_price_sets_the_least_output_rounded_up() -> None:
    order = replace(_conditional(OrderType.LIMIT, limit="150.0000001"), amount_in=1_500_000_000)
    # 1.5 SOL at 150.0000001 USDC each: 225.00000015 USDC, 225.000001 in base units.
    assert order.min_out_for_limit(9, 6) == 225_000_001
    assert make_order().min_out_for_limit(9, 6) == 0


def test_expiry_is_at_or_after_its_time() -> None:
    order = replace(make_order(), expires_at=T0)
    assert order.expired(T0) and not order.expired(T0 - timedelta(microseconds=1))
    assert not make_order().expired(T0)


def test_a_triggered_stop_without_a_limit_that_rests_again_waits_for_its_trigger_again() -> None:
    stop = _conditional(OrderType.STOP, stop="140")
    routing, _ = applied(stop, Change(Trigger.PRICE_REACHED, 1))
    assert routing.triggered_at is not None
    rested, _ = applied(routing, Change(Trigger.REST, 1, error="slippage exceeded"))
    assert rested.triggered_at is None
    assert rested.resting_side() == (Side.AT_OR_BELOW, Decimal(140))
    # With a limit it keeps waiting as the limit order it became.
    stop_limit = _conditional(OrderType.STOP, stop="140", limit="139")
    routing, _ = applied(stop_limit, Change(Trigger.PRICE_REACHED, 1))
    rested, _ = applied(routing, Change(Trigger.REST, 1))
    assert rested.triggered_at is not None
    assert rested.resting_side() == (Side.AT_OR_ABOVE, Decimal(139))
