"""Known tokens and the conversion between UI amounts and integer base units."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation

from core.errors import InvalidInput

MAX_BASE_UNITS = 2**64 - 1  # SPL token amounts are u64
_EXACT = Context(prec=80)  # for showing amounts; conversions never round
_PLAIN_DECIMAL = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_BASE58 = set("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")


@dataclass(frozen=True)
class Token:
    symbol: str
    mint: str
    decimals: int

    def to_base_units(self, amount: Decimal) -> int:
        """Convert a positive UI amount into base units exactly, or raise InvalidInput.

        Exact integer arithmetic on the amount's digits, never a rounding context: an amount
        finer than one base unit, or with more digits than the token has decimals, is
        refused, never rounded (to 0, or to a neighbouring amount).
        """
        sign, digit_tuple, exponent = amount.as_tuple()
        if not isinstance(exponent, int):  # NaN or infinity
            raise InvalidInput(f"amount {_excerpt(amount)} is not a finite number")
        digits = "".join(map(str, digit_tuple)).lstrip("0")
        if sign or not digits:
            raise InvalidInput("amount must be greater than zero")
        stripped = digits.rstrip("0")  # 1.50 is 1.5
        exponent += len(digits) - len(stripped)
        if -exponent > self.decimals:
            raise InvalidInput(
                f"amount {_excerpt(amount)} has more than {self.decimals} decimals allowed"
                f" for {self.symbol}"
            )
        # Count the digits first: 1e999999 must not become a million-digit integer.
        digits_in_units = len(stripped) + exponent + self.decimals
        units = 0
        if digits_in_units <= len(str(MAX_BASE_UNITS)):
            units = int(stripped) * 10 ** (exponent + self.decimals)
        if not 0 < units <= MAX_BASE_UNITS:
            raise InvalidInput(f"amount {_excerpt(amount)} is too large: at most"
                               f" {self.to_ui(MAX_BASE_UNITS)} {self.symbol}")
        return units

    def to_ui(self, base_units: int) -> Decimal:
        """Convert base units into a UI amount."""
        return Decimal(base_units).scaleb(-self.decimals, _EXACT)


DEFAULT_TOKENS: tuple[Token, ...] = (
    Token("SOL", "So11111111111111111111111111111111111111112", 9),
    Token("USDC", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", 6),
    Token("USDT", "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB", 6),
    Token("RAY", "4k3Dyjzvzp8eMZWUXbBCjEvwSkkk59S5iCNLY3QrkX6R", 6),
)


USD_SYMBOLS = frozenset({"USDC", "USDT"})  # what a USD notional is read in

# Each network's tokens: mints differ between mainnet and devnet (devnet USDC is Circle's
# devnet mint); the local cluster and the simulated chain use mainnet's addresses.
NETWORK_TOKENS: dict[str, tuple[Token, ...]] = {
    "mainnet-beta": DEFAULT_TOKENS,
    "devnet": (
        Token("SOL", "So11111111111111111111111111111111111111112", 9),
        Token("USDC", "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU", 6),
    ),
    "localnet": DEFAULT_TOKENS,
    "sim": DEFAULT_TOKENS,
}


class TokenRegistry:
    """Resolve a symbol or a base58 mint to a known token."""

    @classmethod
    def for_network(cls, network: str) -> TokenRegistry:
        return cls(NETWORK_TOKENS[network])

    def __init__(self, tokens: tuple[Token, ...] = DEFAULT_TOKENS) -> None:
        self.tokens = tokens
        self._by_symbol = {t.symbol.upper(): t for t in tokens}
        self._by_mint = {t.mint: t for t in tokens}

    def knows(self, ref: str) -> bool:
        return ref.upper() in self._by_symbol or ref in self._by_mint

    def learn(self, token: Token) -> None:
        """Add a token found on the chain (a live network's mint that is on no list)."""
        if token.mint not in self._by_mint:
            self.tokens = (*self.tokens, token)
            self._by_mint[token.mint] = token
            self._by_symbol.setdefault(token.symbol.upper(), token)

    def resolve(self, ref: str) -> Token:
        """Return the token named by symbol (any case) or mint; raise InvalidInput otherwise."""
        token = self._by_symbol.get(ref.upper()) or self._by_mint.get(ref)
        if token is not None:
            return token
        if looks_like_mint(ref):
            raise InvalidInput(f"unknown token mint {ref!r}: no venue lists it")
        raise InvalidInput(
            f"unknown token {_excerpt(ref)!r}: use a symbol from /api/tokens or a base58 mint")

    def by_mint(self, mint: str) -> Token:
        """The token of `mint`; a mint no list names and the chain no longer has is shown
        by its address with 0 decimals (its amounts in base units), never an error."""
        found = self._by_mint.get(mint)
        return found if found is not None else Token(mint, mint, 0)


def looks_like_mint(ref: str) -> bool:
    return 32 <= len(ref) <= 44 and set(ref) <= _BASE58


def _excerpt(value: object, limit: int = 32) -> str:
    """Return at most `limit` characters of a client's value, for an error message."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def parse_amount(raw: object, what: str = "amount") -> Decimal:
    """Parse a positive finite decimal amount from a JSON string or number."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float | Decimal):
        raise InvalidInput(f"{what} must be a decimal string or a number")
    try:
        value = raw if isinstance(raw, Decimal) else Decimal(str(raw).strip())
    except (InvalidOperation, ArithmeticError):
        raise InvalidInput(f"{what} {_excerpt(raw)!r} is not a number") from None
    if not value.is_finite():
        raise InvalidInput(f"{what} {_excerpt(raw)!r} is not a finite number")
    if value <= 0:
        raise InvalidInput(f"{what} must be greater than zero")
    if isinstance(raw, str) and not _PLAIN_DECIMAL.fullmatch(raw.strip()):
        raise InvalidInput(f"{what} {_excerpt(raw)!r} must be a decimal number such as 1.5")
    return value
