"""The public API's request and response models, and the mapping from core values to them."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from core.errors import DexecError, InvalidInput, reason
from core.orders import NewOrder, Order, OrderStatus, OrderType
from core.quotes import Quote, choose_best
from core.tokens import TokenRegistry, parse_amount
from serve.errors import describe_validation_errors

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
    dry_run: StrictBool = Field(
        False, description="Route, build, verify and simulate the swap; never send it. The"
        " order ends `simulated` (every order is a dry run when DEXEC_DRY_RUN is set).")

    def to_command(self, tokens: TokenRegistry, account_id: str, *,
                   dry_run: bool = False) -> NewOrder:
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
            dry_run=self.dry_run or dry_run,
        )


def _field(name: str, fn: Any) -> Any:
    try:
        return fn()
    except InvalidInput as exc:
        raise InvalidInput(f"{name}: {exc.message}") from None


def parse_order_request(body: object, tokens: TokenRegistry, account_id: str, *,
                        dry_run: bool = False) -> NewOrder:
    """Validate a decoded JSON body into a command; raise InvalidInput with every problem."""
    try:
        request = OrderRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidInput(describe_validation_errors(exc.errors(include_url=False))) from None
    return request.to_command(tokens, account_id, dry_run=dry_run)


def ui(amount: int | None, decimals: int) -> str | None:
    return None if amount is None else plain(Decimal(amount).scaleb(-decimals))


def plain(value: Decimal) -> str:
    """Format a Decimal without exponent or trailing zeros ("150", "1.5", "0.000001")."""
    text = f"{value.normalize():f}"
    return text


# -- responses: what /docs shows is what the routes send ------------------------------------

# A view names every field its JSON has: tests validate the routes' JSON against it.
_VIEW = ConfigDict(extra="forbid")


class QuoteView(BaseModel):
    """One venue's quote (amounts in base units, as strings)."""

    model_config = _VIEW

    venue: str
    pool: str
    input_mint: str
    output_mint: str
    amount_in: str
    amount_out: str
    fee: str = Field(description="Swap fee in input base units, already netted out.")
    fee_bps: str
    price_impact_bps: int
    network_fee_lamports: int
    expires_at: float = Field(description="Unix seconds after which the venue drops it.")
    latency_ms: float = Field(description="The venue's round trip for this quote.")


class EventView(BaseModel):
    """One status event, as stored, as listed in `events` and as streamed on /ws."""

    model_config = _VIEW

    type: Literal["order"]
    order_id: str
    seq: int = Field(description="Gapless per order, from 1.")
    status: OrderStatus
    at: str
    attempt: int
    venue: str | None = None
    quotes: list[QuoteView] | None = None
    signature: str | None = None
    amount_out: str | None = Field(None, description="Output base units.")
    price: str | None = None
    error: str | None = None
    error_class: str | None = None


class OrderView(BaseModel):
    """An order with its quotes and event history (amounts in token units, `_base` in
    base units)."""

    model_config = _VIEW

    order_id: str
    client_order_id: str | None
    account_id: str
    type: OrderType
    input_mint: str
    output_mint: str
    input_token: str
    output_token: str
    amount: str
    amount_in_base: str
    slippage_bps: int
    dry_run: bool
    status: OrderStatus
    attempts: int
    seq: int
    venue: str | None
    signature: str | None
    amount_out: str | None
    amount_out_base: str | None
    price: str | None = Field(description="Output token units per input token unit.")
    failure_reason: str | None
    quotes: list[QuoteView]
    created_at: str
    updated_at: str
    events: list[EventView]


class OrderPage(BaseModel):
    model_config = _VIEW

    orders: list[OrderView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class QuotesView(BaseModel):
    model_config = _VIEW

    input_mint: str
    output_mint: str
    amount: str
    amount_in_base: str
    quotes: list[QuoteView]
    best: QuoteView | None = Field(description="The most output net of fees; executes nothing.")
    errors: dict[str, str] = Field(description="Why each venue without a quote has none.")


class TokenView(BaseModel):
    model_config = _VIEW

    symbol: str
    mint: str
    decimals: int


class TokensView(BaseModel):
    model_config = _VIEW

    tokens: list[TokenView]


class WalletTokenView(BaseModel):
    model_config = _VIEW

    symbol: str
    mint: str
    amount: str


class WalletView(BaseModel):
    model_config = _VIEW

    address: str | None
    network: str
    sol: str | None = Field(description="SOL balance; null on the simulated chain")
    tokens: list[WalletTokenView]


class HealthView(BaseModel):
    model_config = _VIEW

    status: Literal["ok"]


class ReadyChecks(BaseModel):
    model_config = _VIEW

    database: bool
    order_manager: bool
    workers: int = Field(description="Workers that answered a ping.")


class ReadyView(BaseModel):
    model_config = _VIEW

    status: Literal["ready", "not ready"]
    checks: ReadyChecks


class ErrorView(BaseModel):
    """Every error of the API, REST and WebSocket."""

    model_config = _VIEW

    error: str


def quotes_json(command: NewOrder, amount: Decimal, quotes: list[Quote],
                errors: dict[str, DexecError]) -> dict[str, Any]:
    """Return the public JSON of every venue's quote for `command` (QuotesView)."""
    best = choose_best(quotes)
    return {
        "input_mint": command.input_mint,
        "output_mint": command.output_mint,
        "amount": str(amount),
        "amount_in_base": str(command.amount_in),
        "quotes": [q.public() for q in quotes],
        "best": best.public() if best else None,
        "errors": {venue: reason(err) for venue, err in errors.items()},
    }


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
        "dry_run": order.dry_run,
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
