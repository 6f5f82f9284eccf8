"""The trigger book: what a price move triggers, once each, and nothing it does not cross."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from core.trigger_book import Resting, Side, TriggerBook

SOL_USDC = ("SOL", "USDC")
RAY_SOL = ("RAY", "SOL")


def limit(order_id: str, price: str, pair: tuple[str, str] = SOL_USDC) -> Resting:
    return Resting(order_id, pair, Side.AT_OR_ABOVE, Decimal(price))


def stop(order_id: str, price: str, pair: tuple[str, str] = SOL_USDC) -> Resting:
    return Resting(order_id, pair, Side.AT_OR_BELOW, Decimal(price))


def test_a_rising_price_triggers_the_limits_it_reaches_lowest_first() -> None:
    book = TriggerBook()
    for order in (limit("a", "150"), limit("b", "149"), limit("c", "151"), stop("s", "140")):
        book.add(order)
    assert book.crossed(SOL_USDC, Decimal("148.99")) == []
    assert [o.order_id for o in book.crossed(SOL_USDC, Decimal("150"))] == ["b", "a"]
    assert book.crossed(SOL_USDC, Decimal("150.5")) == []  # triggered once only
    assert [o.order_id for o in book.crossed(SOL_USDC, Decimal("160"))] == ["c"]
    assert len(book) == 1 and "s" in book


def test_a_falling_price_triggers_the_stops_it_reaches_highest_first() -> None:
    book = TriggerBook()
    for order in (stop("a", "140"), stop("b", "145"), stop("c", "130"), limit("l", "200")):
        book.add(order)
    assert [o.order_id for o in book.crossed(SOL_USDC, Decimal("140"))] == ["b", "a"]
    assert [o.order_id for o in book.crossed(SOL_USDC, Decimal("1"))] == ["c"]
    assert book.pairs() == {SOL_USDC}


def test_equal_thresholds_trigger_oldest_first_and_pairs_stay_apart() -> None:
    book = TriggerBook()
    for name in ("x", "y", "z"):
        book.add(limit(name, "10", RAY_SOL))
    book.add(limit("other", "1"))
    assert [o.order_id for o in book.crossed(RAY_SOL, Decimal("10"))] == ["x", "y", "z"]
    assert book.pairs() == {SOL_USDC}


def test_a_removed_order_is_never_triggered_and_a_repeat_add_rests_it_once() -> None:
    book = TriggerBook()
    book.add(limit("a", "100"))
    book.add(limit("a", "100"))
    assert len(book) == 1
    assert book.remove("a") == limit("a", "100")
    assert book.remove("a") is None
    assert book.crossed(SOL_USDC, Decimal("1000")) == []
    assert book.pairs() == set()


PAIRS = [SOL_USDC, RAY_SOL]
prices = st.integers(min_value=90, max_value=110).map(lambda n: Decimal(n) / 1)
operations = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 40), st.sampled_from(PAIRS),
              st.sampled_from(list(Side)), prices),
    st.tuples(st.just("remove"), st.integers(0, 40)),
    st.tuples(st.just("price"), st.sampled_from(PAIRS), prices),
), max_size=200)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_no_order_is_triggered_twice_or_skipped_when_the_price_crosses_it(
        ops: list[tuple[object, ...]]) -> None:
    book = TriggerBook()
    model: dict[str, Resting] = {}  # what should be resting
    triggered: set[str] = set()
    removed: set[str] = set()
    for op in ops:
        if op[0] == "add":
            _, n, pair, side, threshold = op
            order = Resting(f"o{n}", pair, side, threshold)  # type: ignore[arg-type]
            if order.order_id in triggered or order.order_id in removed:
                continue  # an order id is used once, as orders are
            book.add(order)
            model.setdefault(order.order_id, order)
        elif op[0] == "remove":
            order_id = f"o{op[1]}"
            assert book.remove(order_id) == model.pop(order_id, None)
            if order_id not in triggered:
                removed.add(order_id)
        else:
            _, pair, price = op
            got = book.crossed(pair, price)  # type: ignore[arg-type]
            ids = [o.order_id for o in got]
            assert len(ids) == len(set(ids))
            assert not set(ids) & triggered, "triggered twice"
            assert not set(ids) & removed, "a removed order was triggered"
            expected = {i for i, o in model.items()
                        if o.pair == pair and o.is_crossed_by(price)}  # type: ignore[arg-type]
            assert set(ids) == expected, "an order the price crossed was skipped"
            for order_id in ids:
                del model[order_id]
            triggered |= set(ids)
        assert len(book) == len(model)
        assert book.pairs() == {o.pair for o in model.values()}
