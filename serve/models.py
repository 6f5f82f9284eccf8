"""The public API's request and response models, and the mapping from core values to them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
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
from core.orders import NewOrder, Order, OrderStatus, OrderType, TimeInForce
from core.quotes import Quote, choose_best
from core.tokens import TokenRegistry, parse_amount
from serve.errors import describe_validation_errors

MAX_SLIPPAGE_BPS = 5000
MAX_GTT = timedelta(days=365)  # how far ahead a gtt order may expire
Number = StrictStr | StrictInt | StrictFloat | Decimal


class OrderRequest(BaseModel):
    """Body of POST /api/orders and of the WebSocket `submit` op."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["market", "limit", "stop"] = Field(
        description="`market` executes now; `limit` once the best net quote pays at least"
        " `limit_price`; `stop` once it falls to `trigger_price`, then as a market order (or,"
        " with `limit_price`, as a limit order).")
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
    limit_price: Number | None = Field(
        None, description="Least output per input, in token units (limit; stop-limit).")
    trigger_price: Number | None = Field(
        None, description="Output per input at or below which a stop order is set off.")
    time_in_force: Literal["gtc", "gtt", "ioc"] | None = Field(
        None, description="Limit and stop orders: `gtc` (the default) rests until it executes"
        " or is cancelled, `gtt` until `expires_at`, `ioc` tries once against the current"
        " quotes and expires if they miss its price.")
    expires_at: AwareDatetime | None = Field(
        None, description="With `gtt`: when the order expires (ISO 8601 with a time zone).")
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
        limit, trigger, tif, expires = self._conditions()
        return NewOrder(
            account_id=account_id,
            client_order_id=self.client_order_id,
            order_type=OrderType(self.type),
            input_mint=token_in.mint,
            output_mint=token_out.mint,
            amount_in=amount,
            slippage_bps=self.slippage_bps,
            dry_run=self.dry_run or dry_run,
            limit_price=limit,
            trigger_price=trigger,
            time_in_force=tif,
            expires_at=expires,
        )

    def _conditions(self) -> tuple[Decimal | None, Decimal | None, TimeInForce | None,
                                   datetime | None]:
        """The prices and time in force the order type takes; InvalidInput for the rest."""
        def price(name: str, raw: Number | None) -> Decimal | None:
            if raw is None:
                return None
            value = parse_amount(raw, name)
            if value.adjusted() > 18 or value.adjusted() < -18:
                raise InvalidInput(f"{name} {value} is out of range (1e-18 to 1e18)")
            return value

        limit = price("limit_price", self.limit_price)
        trigger = price("trigger_price", self.trigger_price)
        if self.type == "market":
            if limit is not None or trigger is not None or self.time_in_force is not None:
                raise InvalidInput("a market order takes no limit_price, trigger_price or"
                                   " time_in_force: use type limit or stop")
        elif self.type == "limit":
            if limit is None:
                raise InvalidInput("a limit order needs limit_price")
            if trigger is not None:
                raise InvalidInput("a limit order takes no trigger_price: use type stop")
        elif trigger is None:
            raise InvalidInput("a stop order needs trigger_price")
        tif = None if self.type == "market" else TimeInForce(self.time_in_force or "gtc")
        if tif is TimeInForce.GTT:
            if self.expires_at is None:
                raise InvalidInput("time_in_force gtt needs expires_at")
            now = datetime.now(UTC)
            if self.expires_at <= now:
                raise InvalidInput("expires_at is in the past")
            if self.expires_at - now > MAX_GTT:
                raise InvalidInput("expires_at is more than 365 days ahead")
            return limit, trigger, tif, self.expires_at.astimezone(UTC)
        if self.expires_at is not None:
            raise InvalidInput("expires_at applies only to time_in_force gtt")
        return limit, trigger, tif, None


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
    quoted_at: float | None = Field(None, description="Unix seconds the price watcher received"
                                    " it (the quote that set off or missed a resting order).")


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
    limit_price: str | None
    trigger_price: str | None
    time_in_force: TimeInForce | None
    expires_at: str | None
    triggered_at: str | None = Field(description="When a stop order's trigger price came.")
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
        "limit_price": plain(order.limit_price) if order.limit_price is not None else None,
        "trigger_price": plain(order.trigger_price) if order.trigger_price is not None else None,
        "time_in_force": str(order.time_in_force) if order.time_in_force is not None else None,
        "expires_at": order.expires_at.isoformat() if order.expires_at is not None else None,
        "triggered_at": (order.triggered_at.isoformat() if order.triggered_at is not None
                         else None),
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
