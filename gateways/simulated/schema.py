"""What the simulated venue servers answer, typed: the gateway parses it into core values."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class PoolQuote:
    """A simulated venue's answer to a quote request (amounts in base units)."""

    pool: str
    x_to_y: bool
    amount_out: int
    fee: int
    fee_bps: Decimal
    price_impact_bps: int


@dataclass(frozen=True)
class SwapRoute:
    """What a simulated venue needs to build the swap of a quote: the pool and direction.

    Travels inside `core.Quote.payload`, opaque to everything outside this venue.
    """

    pool: str
    x_to_y: bool

    def encode(self) -> str:
        return json.dumps({"pool": self.pool, "x_to_y": self.x_to_y})

    @classmethod
    def decode(cls, payload: str) -> SwapRoute:
        """Parse a payload made by `encode`; raise ValueError if it is not one."""
        try:
            data = json.loads(payload)
            return cls(pool=str(data["pool"]), x_to_y=bool(data["x_to_y"]))
        except (TypeError, KeyError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a simulated swap route: {exc}") from None
