"""Quotes from venues, fills, and the routing choice between them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import Any

# The venues dexec routes between; settings may name a subset.
VENUES: tuple[str, ...] = ("raydium", "meteora")


@dataclass(frozen=True)
class Quote:
    """One venue's offer to swap `amount_in` of one mint for `amount_out` of another."""

    venue: str
    pool: str
    input_mint: str
    output_mint: str
    amount_in: int
    amount_out: int
    fee: int  # swap fee, base units of the input token (already netted out of amount_out)
    fee_bps: Decimal
    price_impact_bps: int
    network_fee_lamports: int = 5000
    expires_at: float = 0.0  # unix seconds after which the venue no longer honours the quote
    payload: str = ""  # opaque venue data the same venue needs to build the swap
    latency_ms: float = 0.0  # the venue's round trip for this quote, measured by the gateway
    quoted_at: float = 0.0  # unix seconds it was received, where a watcher keeps it (0: not)

    def public(self) -> dict[str, Any]:
        """Return the JSON-ready view shown to clients and stored with the order."""
        return dict(self._public)  # a copy: the caller may change it

    @cached_property
    def _public(self) -> dict[str, Any]:
        # Worked out once per quote: one quote that sets off 10,000 resting orders is in
        # each of their events.
        # Every field is a plain value: a shallow copy (asdict would deep-copy each).
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.pop("payload")
        if not self.quoted_at:
            data.pop("quoted_at")
        data["amount_in"] = str(self.amount_in)
        data["amount_out"] = str(self.amount_out)
        data["fee"] = str(self.fee)
        data["fee_bps"] = str(self.fee_bps)
        return data


class SwapStatus(StrEnum):
    """What became of a signed swap transaction, as recorded beside its order."""

    SIGNED = "signed"  # recorded before it was sent: it may land until its blockhash expires
    CONFIRMED = "confirmed"  # landed and executed
    FAILED = "failed"  # landed with an error (e.g. slippage): the chain took only the fee
    EXPIRED = "expired"  # provably never lands
    REJECTED = "rejected"  # refused outright when sent


@dataclass(frozen=True)
class SignedSwap:
    """A signed transaction, recorded before it is sent so a crash can be reconciled."""

    venue: str
    signature: str
    tx_bytes: bytes
    last_valid_block_height: int
    min_amount_out: int


def min_amount_out(quoted_out: int, slippage_bps: int) -> int:
    """Return the least output the transaction may accept: quote x (1 - slippage)."""
    return quoted_out * (10_000 - slippage_bps) // 10_000


def choose_best(quotes: Iterable[Quote]) -> Quote | None:
    """Pick the quote with the most output net of fees; ties go to the cheaper, then by name."""
    ranked = sorted(quotes, key=lambda q: (-q.amount_out, q.network_fee_lamports, q.venue))
    return ranked[0] if ranked else None


def execution_price(
    amount_in: int, in_decimals: int, amount_out: int, out_decimals: int
) -> Decimal:
    """Return output UI units per input UI unit."""
    ui_in = Decimal(amount_in).scaleb(-in_decimals)
    ui_out = Decimal(amount_out).scaleb(-out_decimals)
    return (ui_out / ui_in).quantize(Decimal("1e-12")).normalize()


@dataclass(frozen=True)
class TxStatus:
    """What the chain says about a signature that it has seen (unknown ones are None).

    `pending`: seen (e.g. `processed`) but not yet confirmed. Not landed, and not absent
    either: it may still land, so it must never be taken for expired.
    """

    signature: str
    confirmed: bool
    block_height: int
    amount_out: int = 0
    error: str | None = None
    error_code: str | None = None  # a dexec error code, e.g. "slippage_exceeded"
    pending: bool = False

    @property
    def landed(self) -> bool:
        return not self.pending
