"""The response models /docs shows describe exactly the JSON the routes send."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from core.errors import VenueTimeout
from core.orders import Change, Order, Trigger
from core.tokens import TokenRegistry
from serve.models import OrderView, QuotesView, order_json, quotes_json
from tests.kit.orders import T0, confirming_changes, make_order, make_quote, new_order

TOKENS = TokenRegistry()


def confirmed_order() -> Order:
    """An order that went the whole way, with quotes, a signature, an output and a price."""
    order = make_order()
    events = []
    quotes = (make_quote("raydium", 150_000_000), make_quote("meteora", 149_000_000))
    steps = confirming_changes(quotes, amount_out=150_000_000, price=Decimal("150"))
    for k, step in enumerate(steps, start=1):
        applied = order.apply(step, T0 + timedelta(seconds=k))
        assert applied is not None
        order = applied[0]
        events.append(applied[1])
    return replace(order, events=tuple(events), quotes=quotes)


def test_a_new_order_s_json_is_an_order_view() -> None:
    OrderView.model_validate(order_json(make_order(client_order_id="c-1"), TOKENS))


def test_a_confirmed_order_s_json_with_quotes_and_events_is_an_order_view() -> None:
    order = confirmed_order()
    wire = order_json(order, TOKENS)

    view = OrderView.model_validate(wire)

    assert [e.status for e in view.events] == ["routing", "building", "submitted", "confirmed"]
    assert view.events[1].quotes is not None and len(view.events[1].quotes) == 2
    assert view.amount_out == "150" and view.price == "150"


def test_a_failed_order_s_json_is_an_order_view() -> None:
    failed = make_order().apply(Change(Trigger.FAIL, 0, error="no route",
                                       error_class="terminal"), T0)
    assert failed is not None
    OrderView.model_validate(order_json(replace(failed[0], events=(failed[1],)), TOKENS))


def test_the_quotes_json_is_a_quotes_view_with_and_without_a_winner() -> None:
    command = new_order()
    quotes = [make_quote("raydium", 150_000_000), make_quote("meteora", 151_000_000)]
    timeout = VenueTimeout("meteora quote timed out", venue="meteora")

    some = QuotesView.model_validate(quotes_json(command, Decimal(1), quotes, {}))
    none = QuotesView.model_validate(quotes_json(command, Decimal(1), [], {"meteora": timeout}))

    assert some.best is not None and some.best.venue == "meteora"
    assert none.best is None and none.errors == {"meteora": "meteora quote timed out"}


def test_a_view_refuses_a_field_the_routes_do_not_send() -> None:
    # Otherwise a key added to the JSON but not to its view would not show in /docs.
    wire = order_json(make_order(), TOKENS) | {"surprise": 1}
    with pytest.raises(ValidationError, match="surprise"):
        OrderView.model_validate(wire)
