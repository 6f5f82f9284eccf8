"""Unit tests for token resolution and UI-amount to base-unit conversion."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import InvalidInput
from core.tokens import DEFAULT_TOKENS, Token, TokenRegistry, parse_amount

SOL_MINT = "So11111111111111111111111111111111111111112"
USDC_MINT = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
TOKENS = TokenRegistry()
SOL = TOKENS.resolve("SOL")
USDC = TOKENS.resolve("USDC")


# --- resolve -------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["SOL", "sol", "Sol", "sOL"])
def test_resolve_symbol_in_any_case(ref: str) -> None:
    token = TOKENS.resolve(ref)
    assert token.symbol == "SOL"
    assert token.mint == SOL_MINT
    assert token.decimals == 9


@pytest.mark.parametrize("token", DEFAULT_TOKENS, ids=[t.symbol for t in DEFAULT_TOKENS])
def test_resolve_by_mint_and_by_symbol_agree(token: Token) -> None:
    assert TOKENS.resolve(token.mint) == token
    assert TOKENS.resolve(token.symbol.lower()) == token
    assert TOKENS.by_mint(token.mint) == token


def test_default_tokens_have_their_real_decimals() -> None:
    assert {t.symbol: t.decimals for t in DEFAULT_TOKENS} == {
        "SOL": 9, "USDC": 6, "USDT": 6, "RAY": 6,
    }
    assert USDC.mint == USDC_MINT


@pytest.mark.parametrize("ref", ["BONK", "xyz", "", "S0L", "SOL/USDC"])
def test_unknown_symbol_is_invalid_input_naming_it(ref: str) -> None:
    with pytest.raises(InvalidInput, match="unknown token") as info:
        TOKENS.resolve(ref)
    assert repr(ref) in info.value.message
    assert "/api/tokens" in info.value.message


@pytest.mark.parametrize(
    "mint",
    [
        "So11111111111111111111111111111111111111113",  # one character off SOL
        "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYC",
        "11111111111111111111111111111111",  # 32 characters, the shortest base58 pubkey
    ],
)
def test_unknown_base58_mint_is_invalid_input_saying_no_venue_lists_it(mint: str) -> None:
    with pytest.raises(InvalidInput, match="unknown token mint") as info:
        TOKENS.resolve(mint)
    assert mint in info.value.message
    assert "no venue lists it" in info.value.message


def test_mint_lookup_is_exact_not_case_insensitive() -> None:
    with pytest.raises(InvalidInput):
        TOKENS.resolve(USDC_MINT.lower())


def test_a_custom_registry_only_knows_its_tokens() -> None:
    registry = TokenRegistry((Token("ABC", SOL_MINT, 3),))
    assert registry.resolve("abc").decimals == 3
    with pytest.raises(InvalidInput):
        registry.resolve("USDC")


# --- parse_amount --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1.5", Decimal("1.5")),
        (1.5, Decimal("1.5")),
        (2, Decimal(2)),
        (Decimal("0.1"), Decimal("0.1")),
        (" 3 ", Decimal(3)),
        ("0.000000001", Decimal("1e-9")),
        (0.1, Decimal("0.1")),  # the shortest repr, not the binary float's expansion
    ],
)
def test_parse_amount_accepts_decimal_strings_and_numbers(raw: object, expected: Decimal) -> None:
    value = parse_amount(raw)
    assert isinstance(value, Decimal)
    assert value == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (0, "greater than zero"),
        ("0", "greater than zero"),
        ("0.000", "greater than zero"),
        ("-1", "greater than zero"),
        (-0.5, "greater than zero"),
        ("abc", "is not a number"),
        ("", "is not a number"),
        ("1.2.3", "is not a number"),
        ("1_000", "must be a decimal number"),
        ("+5", "must be a decimal number"),
        ("NaN", "not a finite number"),
        ("Infinity", "not a finite number"),
        ("-Infinity", "not a finite number"),
        (float("nan"), "not a finite number"),
        (True, "decimal string or a number"),
        (False, "decimal string or a number"),
        (None, "decimal string or a number"),
        ([], "decimal string or a number"),
        (["1"], "decimal string or a number"),
        ({"amount": 1}, "decimal string or a number"),
    ],
)
def test_parse_amount_rejects_with_a_clear_message(raw: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_amount(raw)


# --- to_base_units -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "amount", "base"),
    [
        (SOL, "1", 1_000_000_000),
        (SOL, "1.5", 1_500_000_000),
        (SOL, "1.500000000000", 1_500_000_000),  # trailing zeros beyond 9 places are fine
        (SOL, "0.000000001", 1),
        (SOL, "1E+3", 1_000_000_000_000),
        (USDC, "0.1", 100_000),
        (USDC, "1.000000", 1_000_000),
        (USDC, "123456.789012", 123_456_789_012),
        (USDC, "1000000000", 10**15),
    ],
)
def test_to_base_units_converts_exactly(token: Token, amount: str, base: int) -> None:
    assert token.to_base_units(parse_amount(amount)) == base
    assert token.to_ui(base) == Decimal(amount)


@pytest.mark.parametrize(
    ("token", "amount"),
    [(USDC, "1.0000001"), (USDC, "0.0000001"), (SOL, "0.0000000001"), (SOL, "1.1234567891")],
)
def test_to_base_units_rejects_sub_unit_precision(token: Token, amount: str) -> None:
    with pytest.raises(InvalidInput, match=f"more than {token.decimals} decimals") as info:
        token.to_base_units(parse_amount(amount))
    assert token.symbol in info.value.message


def test_to_base_units_rejects_sub_unit_precision_beyond_28_digits() -> None:
    # 1 USDC plus 1e-29: far below one base unit, so it must be refused, not rounded away.
    with pytest.raises(InvalidInput, match="more than 6 decimals"):
        USDC.to_base_units(parse_amount("1.00000000000000000000000000001"))


def test_to_base_units_is_exact_up_to_the_u64_limit_and_refuses_beyond() -> None:
    # 20 significant digits at the very top of u64: exact, no rounding.
    assert USDC.to_base_units(parse_amount("18446744073709.551615")) == 2**64 - 1
    for too_big in ("18446744073709.551616", "12345678901234567890123.456789", "1e999999"):
        with pytest.raises(InvalidInput, match="too large"):
            USDC.to_base_units(parse_amount(too_big))


@given(
    units=st.integers(min_value=1, max_value=10**18),
    decimals=st.integers(min_value=0, max_value=12),
)
def test_base_units_round_trip_through_ui_amounts(units: int, decimals: int) -> None:
    token = Token("TKN", SOL_MINT, decimals)
    ui = token.to_ui(units)
    assert token.to_base_units(parse_amount(str(ui))) == units


def test_each_network_has_its_own_mints() -> None:
    devnet, mainnet = TokenRegistry.for_network("devnet"), TokenRegistry.for_network(
        "mainnet-beta")
    assert devnet.resolve("USDC").mint != mainnet.resolve("USDC").mint
    assert devnet.resolve("SOL") == mainnet.resolve("SOL")  # wrapped SOL is one mint
    with pytest.raises(InvalidInput):
        devnet.resolve("RAY")  # no devnet RAY in the list: refused, never guessed
