"""Unit tests for parsing an order request body into a core command."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from core.errors import InvalidInput
from core.orders import NewOrder, Order, OrderType, TimeInForce
from core.tokens import TokenRegistry
from serve.models import parse_order_request

SOL = "So11111111111111111111111111111111111111112"
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
TOKENS = TokenRegistry()


def body(**changes: Any) -> dict[str, Any]:
    valid: dict[str, Any] = {"type": "market", "input_mint": "SOL", "output_mint": "USDC",
                             "amount": "1.5", "slippage_bps": 50, "client_order_id": "abc-1"}
    valid.update(changes)
    return valid


def without(*fields: str) -> dict[str, Any]:
    return {k: v for k, v in body().items() if k not in fields}


def parse(raw: object) -> NewOrder:
    return parse_order_request(raw, TOKENS, "acct-1")


def rejection(raw: object) -> str:
    with pytest.raises(InvalidInput) as info:
        parse(raw)
    return info.value.message


# --- valid bodies ---------------------------------------------------------------------------


def test_a_valid_body_becomes_a_command_in_base_units() -> None:
    assert parse(body()) == NewOrder(
        account_id="acct-1", client_order_id="abc-1", order_type=OrderType.MARKET,
        input_mint=SOL, output_mint=USDC, amount_in=1_500_000_000, slippage_bps=50,
    )


def test_a_decoded_json_document_parses() -> None:
    document = ('{"type": "market", "input_mint": "usdc", "output_mint": "MINT",'
                ' "amount": 250.25, "slippage_bps": 0}')
    raw = json.loads(document.replace("MINT", SOL))
    command = parse(raw)
    assert command.input_mint == USDC
    assert command.output_mint == SOL
    assert command.amount_in == 250_250_000
    assert command.slippage_bps == 0
    assert command.client_order_id is None


@pytest.mark.parametrize(
    ("amount", "base"),
    [("1.5", 1_500_000_000), (1.5, 1_500_000_000), (2, 2_000_000_000),
     ("0.000000001", 1), ("1.500000000000", 1_500_000_000)],
)
def test_amount_may_be_a_string_or_a_number(amount: object, base: int) -> None:
    assert parse(body(amount=amount)).amount_in == base


def test_slippage_defaults_to_50_bps_and_client_order_id_is_optional() -> None:
    command = parse(without("slippage_bps", "client_order_id"))
    assert command.slippage_bps == 50
    assert command.client_order_id is None


@pytest.mark.parametrize("slippage", [0, 1, 5000])
def test_slippage_bounds_are_inclusive(slippage: int) -> None:
    assert parse(body(slippage_bps=slippage)).slippage_bps == slippage


@pytest.mark.parametrize("client_id", ["a", "A.b_c:d-9", "x" * 64])
def test_client_order_id_accepts_the_documented_alphabet(client_id: str) -> None:
    assert parse(body(client_order_id=client_id)).client_order_id == client_id


# --- missing and unknown fields -------------------------------------------------------------


@pytest.mark.parametrize("field", ["type", "input_mint", "output_mint", "amount"])
def test_a_missing_field_is_named(field: str) -> None:
    assert rejection(without(field)) == f"{field}: field required"


def test_every_missing_field_is_named_at_once() -> None:
    message = rejection({})
    for field in ("type", "input_mint", "output_mint", "amount"):
        assert f"{field}: field required" in message


def test_an_unknown_field_is_named() -> None:
    assert rejection(body(price="150")) == "price: unknown field"


@pytest.mark.parametrize("raw", [[], "order", 42, None, ["type", "market"]])
def test_a_body_that_is_not_an_object_is_refused(raw: object) -> None:
    assert rejection(raw) == "the order must be a JSON object"


# --- amounts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("0", "amount: amount must be greater than zero"),
        (0, "amount: amount must be greater than zero"),
        ("-1", "amount: amount must be greater than zero"),
        (-2.5, "amount: amount must be greater than zero"),
        ("abc", "amount: amount 'abc' is not a number"),
        ("", "amount: amount '' is not a number"),
        ("NaN", "amount: amount 'NaN' is not a finite number"),
        ("Infinity", "amount: amount 'Infinity' is not a finite number"),
    ],
)
def test_a_bad_amount_is_explained(amount: object, expected: str) -> None:
    assert rejection(body(amount=amount)) == expected


def test_too_many_decimals_for_the_input_token_is_refused() -> None:
    message = rejection(body(input_mint="USDC", output_mint="SOL", amount="1.0000001"))
    assert message.startswith("amount: ")
    assert "more than 6 decimals" in message
    assert "USDC" in message


@pytest.mark.parametrize("amount", [[1], {"value": 1}, True, False, None])
def test_amount_of_the_wrong_json_type_is_refused(amount: object) -> None:
    message = rejection(body(amount=amount))
    assert message.startswith("amount: ")
    assert all(part.startswith("amount: ") for part in message.split("; "))


# --- tokens ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("inp", "out"), [("SOL", "SOL"), ("sol", "SOL"), (SOL, "sol"),
                                          ("USDC", USDC)])
def test_the_same_token_in_and_out_is_refused(inp: str, out: str) -> None:
    assert rejection(body(input_mint=inp, output_mint=out)) == (
        "input_mint and output_mint must differ"
    )


def test_an_unknown_input_token_is_named() -> None:
    message = rejection(body(input_mint="BONK"))
    assert message.startswith("input_mint: unknown token 'BONK'")


def test_an_unknown_output_mint_is_named() -> None:
    mint = "So11111111111111111111111111111111111111113"
    message = rejection(body(output_mint=mint))
    assert message.startswith("output_mint: unknown token mint")
    assert mint in message


@pytest.mark.parametrize("field", ["input_mint", "output_mint"])
def test_a_token_that_is_not_a_string_is_refused(field: str) -> None:
    assert rejection(body(**{field: 5})).startswith(f"{field}: ")


# --- order type, slippage, client_order_id ---------------------------------------------------


@pytest.mark.parametrize("order_type", ["twap", "MARKET", "", 1])
def test_an_unknown_order_type_is_refused(order_type: object) -> None:
    message = rejection(body(type=order_type))
    assert message.startswith("type: ")
    assert "market" in message


@pytest.mark.parametrize("slippage", ["50", True, False, 50.5, 50.0, None, [50]])
def test_slippage_must_be_a_json_integer(slippage: object) -> None:
    message = rejection(body(slippage_bps=slippage))
    assert message.startswith("slippage_bps: ")
    assert "integer" in message


@pytest.mark.parametrize(("slippage", "word"), [(-1, "greater than or equal to 0"),
                                                (5001, "less than or equal to 5000")])
def test_slippage_out_of_range_is_refused(slippage: int, word: str) -> None:
    message = rejection(body(slippage_bps=slippage))
    assert message.startswith("slippage_bps: ")
    assert word in message


@pytest.mark.parametrize(
    ("client_id", "word"),
    [("x" * 65, "at most 64 characters"), ("has space", "pattern"), ("", "at least 1"),
     ("tab\there", "pattern"), ("é", "pattern")],
)
def test_a_bad_client_order_id_is_refused(client_id: str, word: str) -> None:
    message = rejection(body(client_order_id=client_id))
    assert message.startswith("client_order_id: ")
    assert word in message


def test_client_order_id_must_be_a_string() -> None:
    assert rejection(body(client_order_id=123)).startswith("client_order_id: ")


def test_several_problems_are_reported_together() -> None:
    message = rejection(body(type="twap", slippage_bps="50", extra=True))
    assert "type: " in message
    assert "slippage_bps: " in message
    assert "extra: unknown field" in message


# --- limit and stop orders ---------------------------------------------------------------------


def test_limit_stop_and_their_time_in_force_become_commands() -> None:
    limit = parse(body(type="limit", limit_price="151.25"))
    assert (limit.order_type, limit.limit_price, limit.time_in_force) == (
        OrderType.LIMIT, Decimal("151.25"), TimeInForce.GTC)
    assert limit.rests
    stop = parse(body(type="stop", trigger_price=140, limit_price="139.5",
                      time_in_force="ioc"))
    assert (stop.trigger_price, stop.limit_price, stop.time_in_force) == (
        Decimal(140), Decimal("139.5"), TimeInForce.IOC)
    assert not stop.rests
    expires = datetime.now(UTC) + timedelta(minutes=5)
    gtt = parse(body(type="limit", limit_price="1", time_in_force="gtt",
                     expires_at=expires.isoformat()))
    assert gtt.time_in_force is TimeInForce.GTT and gtt.expires_at == expires
    market = parse(body())
    assert market.time_in_force is None and market.limit_price is None


@pytest.mark.parametrize(("changes", "words"), [
    ({"type": "limit"}, "a limit order needs limit_price"),
    ({"type": "limit", "limit_price": "1", "trigger_price": "1"}, "takes no trigger_price"),
    ({"type": "stop"}, "a stop order needs trigger_price"),
    ({"type": "stop", "limit_price": "1"}, "a stop order needs trigger_price"),
    ({"limit_price": "1"}, "a market order takes no"),
    ({"time_in_force": "gtc"}, "a market order takes no"),
    ({"type": "limit", "limit_price": "0"}, "limit_price must be greater than zero"),
    ({"type": "limit", "limit_price": "-3"}, "limit_price must be greater than zero"),
    ({"type": "limit", "limit_price": "1,5"}, "limit_price '1,5' is not a number"),
    ({"type": "limit", "limit_price": "NaN"}, "limit_price 'NaN' is not a finite number"),
    ({"type": "limit", "limit_price": "1" + "0" * 19}, "out of range"),
    ({"type": "stop", "trigger_price": True}, "trigger_price: "),
    ({"type": "limit", "limit_price": "1", "time_in_force": "gtt"}, "needs expires_at"),
    ({"type": "limit", "limit_price": "1", "time_in_force": "gtt",
      "expires_at": "2020-01-01T00:00:00Z"}, "expires_at is in the past"),
    ({"type": "limit", "limit_price": "1", "time_in_force": "gtt",
      "expires_at": "2999-01-01T00:00:00Z"}, "more than 365 days"),
    ({"type": "limit", "limit_price": "1", "time_in_force": "gtt",
      "expires_at": "2999-01-01T00:00:00"}, "expires_at: "),  # no time zone
    ({"type": "limit", "limit_price": "1", "expires_at": "2999-01-01T00:00:00Z"},
     "only to time_in_force gtt"),
    ({"type": "limit", "limit_price": "1", "time_in_force": "day"}, "time_in_force: "),
])
def test_invalid_conditions_are_refused_with_what_to_fix(changes: dict[str, Any],
                                                         words: str) -> None:
    assert words in rejection(body(**changes))


def test_a_repeat_must_repeat_its_conditions_too() -> None:
    first = parse(body(type="limit", limit_price="150"))
    order = Order.created(first, "o-1", datetime.now(UTC))
    assert first.same_request(order)
    assert not parse(body(type="limit", limit_price="151")).same_request(order)
    assert not parse(body(type="limit", limit_price="150", time_in_force="ioc")
                     ).same_request(order)
