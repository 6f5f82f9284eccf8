"""Meteora DLMM pool API answers as typed values (`/pair/all`, `/pair/{address}`)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any


@dataclass(frozen=True)
class MeteoraPair:
    address: str
    name: str
    mint_x: str
    mint_y: str
    bin_step: int
    base_fee_percentage: Decimal
    liquidity: Decimal
    hidden: bool  # `hide` or `is_blacklisted`: never routed to


def parse_pair(item: Any) -> MeteoraPair:
    if not isinstance(item, dict):
        raise ValueError("a pair is not a JSON object")
    try:
        bin_step = item["bin_step"]
        if isinstance(bin_step, bool) or not isinstance(bin_step, int) or bin_step <= 0:
            raise ValueError("bin_step is not a positive integer")
        return MeteoraPair(
            address=str(item["address"]), name=str(item.get("name", "")),
            mint_x=str(item["mint_x"]), mint_y=str(item["mint_y"]), bin_step=bin_step,
            base_fee_percentage=Decimal(str(item.get("base_fee_percentage", "0"))),
            liquidity=Decimal(str(item.get("liquidity", "0"))),
            hidden=bool(item.get("hide", False) or item.get("is_blacklisted", False)))
    except (KeyError, InvalidOperation) as exc:
        raise ValueError(f"a pair lacks {exc}") from None


def parse_pairs(body: Any) -> list[MeteoraPair]:
    """`/pair/all` answers a JSON array of pairs."""
    if not isinstance(body, list):
        raise ValueError("/pair/all did not answer a list")
    return [parse_pair(item) for item in body]
