"""Issue 12's input findings, each reproduced; these run without Ray or a database."""

from __future__ import annotations

import json

import pytest

from core.errors import InvalidInput
from core.tokens import TokenRegistry
from serve.json_body import decode_json
from serve.models import parse_order_request

TOKENS = TokenRegistry()


def rejection(**body: object) -> str:
    order = {"type": "market", "input_mint": "SOL", "output_mint": "USDC", "amount": "1"}
    with pytest.raises(InvalidInput) as info:
        parse_order_request(order | body, TOKENS, "acct")
    return info.value.message


def test_a_positive_amount_finer_than_one_base_unit_is_refused_not_rounded_to_zero() -> None:
    # Was accepted as 0 base units, then failed the whole submission batch in PostgreSQL.
    message = rejection(amount="1e-1000079")
    assert message.startswith("amount:") and "more than 9 decimals" in message


def test_more_significant_digits_than_the_token_has_are_refused_not_rounded() -> None:
    # 82 significant digits of USDC were stored as 1 base unit.
    message = rejection(input_mint="USDC", output_mint="SOL", amount="0." + "0" * 5 + "1" * 76)
    assert "more than 6 decimals" in message


@pytest.mark.parametrize("amount", ["1." + "0" * 100 + "1", "9" * 5_000])
def test_an_error_echoes_at_most_a_short_excerpt_of_the_input(amount: str) -> None:
    message = rejection(amount=amount)
    assert len(message) < 200 and amount not in message


@pytest.mark.parametrize("raw", ["[" * 100_000 + "]" * 100_000,
                                 '{"a":' * 100_000 + "1" + "}" * 100_000])
def test_json_nested_deeper_than_the_stack_is_bad_json_not_a_crash(raw: str) -> None:
    with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
        decode_json(raw)
    with pytest.raises(json.JSONDecodeError):
        decode_json(raw.encode())


def test_bytes_that_are_not_utf8_are_bad_json() -> None:
    with pytest.raises(json.JSONDecodeError, match="not UTF-8"):
        decode_json(b'{"amount": "\xff"}')


def test_numbers_stay_exact_decimals() -> None:
    assert str(decode_json('{"amount": 0.1000000000000000000001}')["amount"]) == (
        "0.1000000000000000000001")


@pytest.mark.parametrize("field", ["amount", "input_mint"])
def test_a_huge_bad_value_is_named_not_echoed(field: str) -> None:
    huge = "x" * 60_000
    message = rejection(**{field: huge})
    assert message.startswith(f"{field}:") and len(message) < 200
