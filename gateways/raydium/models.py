"""Raydium Trade API answers as typed values (shapes from ../shared/reference/dex-apis.md).

Every parser takes the decoded JSON body and returns a typed value, raises `VenueRefused`
for an answer that says `success: false` (the venue's own refusal: retrying the same request
does not help) and `ValueError` for a body that is not the documented shape (retryable: a
broken proxy or a changed API looks like this, and the other venue can win meanwhile).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from core.errors import VenueRefused


@dataclass(frozen=True)
class RouteStep:
    pool_id: str
    input_mint: str
    output_mint: str
    fee_mint: str
    fee_rate: int  # as the API gives it (basis points)
    fee_amount: int


@dataclass(frozen=True)
class SwapCompute:
    """`GET /compute/swap-base-in`: the quote, and the whole envelope the build needs back."""

    input_mint: str
    input_amount: int
    output_mint: str
    output_amount: int
    other_amount_threshold: int
    slippage_bps: int
    price_impact_pct: Decimal
    route_plan: tuple[RouteStep, ...]
    envelope: dict[str, Any]


def _ok(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValueError("the answer is not a JSON object")
    if body.get("success") is False:
        raise VenueRefused(f"raydium refused: {str(body.get('msg') or 'no reason given')[:200]}")
    if body.get("success") is not True:
        raise ValueError("the answer has no success flag")
    return body


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{name} is not an integer amount")
    number = int(value)
    if number < 0:
        raise ValueError(f"{name} is negative")
    return number


def _decimal(value: Any, name: str) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{name} is not a number") from None


def parse_compute(body: Any) -> SwapCompute:
    data = _ok(body).get("data")
    if not isinstance(data, dict):
        raise ValueError("compute answer without data")
    try:
        plan = tuple(
            RouteStep(str(step["poolId"]), str(step["inputMint"]), str(step["outputMint"]),
                      str(step.get("feeMint", step["inputMint"])),
                      _int(step.get("feeRate", 0), "feeRate"),
                      _int(step.get("feeAmount", 0), "feeAmount"))
            for step in data["routePlan"])
        compute = SwapCompute(
            input_mint=str(data["inputMint"]),
            input_amount=_int(data["inputAmount"], "inputAmount"),
            output_mint=str(data["outputMint"]),
            output_amount=_int(data["outputAmount"], "outputAmount"),
            other_amount_threshold=_int(data["otherAmountThreshold"], "otherAmountThreshold"),
            slippage_bps=_int(data["slippageBps"], "slippageBps"),
            price_impact_pct=_decimal(data.get("priceImpactPct", 0), "priceImpactPct"),
            route_plan=plan, envelope=body)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"compute answer lacks {exc}") from None
    if not plan:
        raise ValueError("compute answer with an empty route plan")
    return compute


def parse_transactions(body: Any) -> list[bytes]:
    """`POST /transaction/swap-base-in`: `data` is a list of `{transaction}` or one object."""
    data = _ok(body).get("data")
    items: list[Any] = data if isinstance(data, list) else [data]
    try:
        return [base64.b64decode(str(item["transaction"]), validate=True) for item in items]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"transaction answer is malformed: {exc}") from None


def parse_auto_fee(body: Any) -> dict[str, int]:
    """`GET {api-v3}/main/auto-fee`: micro-lamports per compute unit by level (vh, h, m)."""
    try:
        levels = dict(_ok(body)["data"]["default"])
        return {level: _int(levels[level], level) for level in ("vh", "h", "m")}
    except (KeyError, TypeError) as exc:
        raise ValueError(f"auto-fee answer lacks {exc}") from None
