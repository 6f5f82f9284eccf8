"""Request validation and response shapes of the public API."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from core.errors import InvalidInput
from core.orders import NewOrder, Order, OrderType
from core.tokens import TokenRegistry, parse_amount

MAX_SLIPPAGE_BPS = 5000


class OrderRequest(BaseModel):
    """Body of POST /api/orders and of the WebSocket `submit` op."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["market"] = Field(description="Order type; only `market` exists today.")
    input_mint: StrictStr = Field(description="Symbol (SOL, USDC, ...) or base58 mint to sell.")
    output_mint: StrictStr = Field(description="Symbol or base58 mint to buy.")
    amount: Annotated[
        StrictStr | StrictInt | StrictFloat | Decimal,
        Field(description="Amount to sell, in input-token units, as a decimal string or number."),
    ]
    slippage_bps: StrictInt = Field(
        50, ge=0, le=MAX_SLIPPAGE_BPS, description="Worst acceptable shortfall vs the quote."
    )
    client_order_id: StrictStr | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:\-]+$",
        description="Your idempotency key: the same key returns the same order.",
    )

    def to_command(self, tokens: TokenRegistry, account_id: str) -> NewOrder:
        """Resolve tokens and amounts into a core command; raise InvalidInput naming the field."""
        token_in = _field("input_mint", lambda: tokens.resolve(self.input_mint))
        token_out = _field("output_mint", lambda: tokens.resolve(self.output_mint))
        if token_in == token_out:
            raise InvalidInput("input_mint and output_mint must differ")
        amount = _field("amount", lambda: token_in.to_base_units(parse_amount(self.amount)))
        return NewOrder(
            account_id=account_id,
            client_order_id=self.client_order_id,
            order_type=OrderType(self.type),
            input_mint=token_in.mint,
            output_mint=token_out.mint,
            amount_in=amount,
            slippage_bps=self.slippage_bps,
        )


def _field(name: str, fn: Any) -> Any:
    try:
        return fn()
    except InvalidInput as exc:
        raise InvalidInput(f"{name}: {exc.message}") from None


def parse_order_request(body: object, tokens: TokenRegistry, account_id: str) -> NewOrder:
    """Validate a decoded JSON body into a command; raise InvalidInput with every problem."""
    if not isinstance(body, dict):
        raise InvalidInput("the order must be a JSON object")
    try:
        request = OrderRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidInput(describe_validation_error(exc)) from None
    return request.to_command(tokens, account_id)


def describe_validation_error(exc: ValidationError) -> str:
    """Return one line naming each offending field and what is wrong with it."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "body"
        loc = loc.split(".")[0] if loc.startswith("amount") else loc
        message = "field required" if err["type"] == "missing" else err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{loc}: {message}")
    return "; ".join(dict.fromkeys(parts))


def ui(amount: int | None, decimals: int) -> str | None:
    return None if amount is None else plain(Decimal(amount).scaleb(-decimals))


def plain(value: Decimal) -> str:
    """Format a Decimal without exponent or trailing zeros ("150", "1.5", "0.000001")."""
    text = f"{value.normalize():f}"
    return text


def order_json(order: Order, tokens: TokenRegistry) -> dict[str, Any]:
    """Return the public JSON of an order (amounts in token units, `_base` in base units)."""
    token_in = tokens.by_mint(order.input_mint)
    token_out = tokens.by_mint(order.output_mint)
    return {
        "order_id": order.order_id,
        "client_order_id": order.client_order_id,
        "account_id": order.account_id,
        "type": str(order.order_type),
        "input_mint": order.input_mint,
        "output_mint": order.output_mint,
        "input_token": token_in.symbol,
        "output_token": token_out.symbol,
        "amount": ui(order.amount_in, token_in.decimals),
        "amount_in_base": str(order.amount_in),
        "slippage_bps": order.slippage_bps,
        "status": str(order.status),
        "attempts": order.attempt,
        "seq": order.seq,
        "venue": order.venue,
        "signature": order.signature,
        "amount_out": ui(order.amount_out, token_out.decimals),
        "amount_out_base": str(order.amount_out) if order.amount_out is not None else None,
        "price": plain(order.price) if order.price is not None else None,
        "failure_reason": order.failure_reason,
        "quotes": [q.public() for q in order.quotes],
        "created_at": order.created_at.isoformat(),
        "updated_at": order.updated_at.isoformat(),
        "events": [e.to_json() for e in order.events],
    }
