"""The ingress deployment: REST and WebSocket routes on one FastAPI app inside Ray Serve."""


import asyncio
import contextlib
import json
import logging
from decimal import Decimal
from typing import Any

import ray
from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve import Application
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actors.batching import Coalescer
from actors.bootstrap import resolve_database, resolve_wallet
from actors.execution import collect_quotes
from actors.runtime import (
    MANAGER,
    NOTIFIER,
    batch_stats,
    start_stack,
    tune_gc,
    venue_gateways,
)
from core.errors import (
    DexecError,
    IdempotencyConflict,
    InvalidInput,
    OrderNotFound,
    Overloaded,
    RetryableError,
    TransientDatabaseError,
    reason,
)
from core.orders import NewOrder, Order, OrderStatus
from core.quotes import choose_best
from core.settings import Settings
from core.tokens import TokenRegistry, parse_amount
from serve.models import OrderRequest, order_json, parse_order_request
from serve.stream import Connection, StreamHub
from storage.repository import OrderRepository

log = logging.getLogger(__name__)

app = FastAPI(
    title="dexec",
    version="0.1.0",
    description="Order execution engine for Solana DEX swaps: market orders routed to the best"
    " venue, executed exactly once, streamed live.",
)

_STATUS_FOR: list[tuple[type[DexecError], int]] = [
    (OrderNotFound, 404),
    (IdempotencyConflict, 409),
    (InvalidInput, 422),
    (Overloaded, 429),
    (TransientDatabaseError, 503),
    (RetryableError, 503),
]


def _error_status(exc: DexecError) -> int:
    for cls, status in _STATUS_FOR:
        if isinstance(exc, cls):
            return status
    return 400


def _retry_after(exc: DexecError) -> int:
    return max(1, int(getattr(exc, "retry_after_s", 1)))


class _IngressMetrics:
    """WebSocket connections and refused submissions, as seen by this replica."""

    def __init__(self) -> None:
        from ray.util import metrics as m

        self.connections = m.Gauge("dexec_websocket_connections", "Open WebSocket connections")
        self.rejected = m.Counter("dexec_submissions_rejected", "Submissions refused with 429",
                                  tag_keys=("reason",))


@app.exception_handler(DexecError)
async def _dexec_error(_: Request, exc: DexecError) -> JSONResponse:
    status = _error_status(exc)
    headers = {"Retry-After": str(_retry_after(exc))} if status in (429, 503) else None
    return JSONResponse({"error": exc.message}, status_code=status, headers=headers)


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"][1:]) or str(err["loc"][0])
        parts.append(f"{loc}: {err['msg']}")
    return JSONResponse({"error": "; ".join(parts)}, status_code=422)


class BodyLimit:
    """Refuse request bodies over the limit with 413, whether or not they declare a length."""

    def __init__(self, inner: ASGIApp, limit: int = 64 * 1024) -> None:
        self.inner = inner
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        # The replica sets its configured limit on the app's state (DEXEC_MAX_BODY_BYTES).
        self.limit = getattr(scope["app"].state, "max_body_bytes", self.limit)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.inner(scope, counted, send)
        except _TooLarge:
            await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        body = json.dumps({"error": f"request body is larger than {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


app.add_middleware(BodyLimit)


def _decode(raw: bytes | str) -> Any:
    try:
        return json.loads(raw, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("body is not valid JSON") from None


async def _answers(call: Any, timeout_s: float = 2.0) -> bool:
    """Return True when the Ray call made by `call()` completes within the timeout."""
    try:
        async with asyncio.timeout(timeout_s):
            await call()
        return True
    except Exception:  # dead, missing or slow: not ready, whatever the cause
        return False


# Everything the deployment class uses must be defined above it: Serve pickles the class
# when the decorator runs, so later module globals would be missing in the replica.


class _NotifierSource:
    def __init__(self, handle: Any) -> None:
        self._h = handle

    async def watch(self, replica_id: str, order_ids: list[str]) -> None:
        await self._h.watch.remote(replica_id, order_ids)

    async def unwatch(self, replica_id: str, order_ids: list[str]) -> None:
        await self._h.unwatch.remote(replica_id, order_ids)

    async def take(self, replica_id: str, timeout_s: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._h.take.remote(replica_id, timeout_s)
        return result


def _since_seq(raw: object, order_ids: list[str]) -> dict[str, int | None]:
    if raw is None:
        return dict.fromkeys(order_ids)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return dict.fromkeys(order_ids, raw)
    if isinstance(raw, dict) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in raw.values()
    ):
        return {i: raw.get(i) for i in order_ids}
    raise InvalidInput("since_seq must be a non-negative integer or an object of order id to seq")


@serve.deployment(name="DexecIngress", ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class DexecIngress:
    """One ingress replica; holds a read pool, handles to the actors, and its WebSockets."""

    def __init__(self, settings: Settings) -> None:
        tune_gc()
        self.settings = settings
        self.tokens = TokenRegistry()
        app.state.max_body_bytes = settings.max_body_bytes
        if settings.database_url is None:
            raise RuntimeError("database_url must be resolved before the ingress starts")
        self.repo = OrderRepository(settings.database_url.get_secret_value(),
                                    min_size=settings.db_pool_min,
                                    max_size=settings.db_pool_max)
        self._opened = False
        self._open_lock = asyncio.Lock()
        ns = settings.namespace
        self.manager = ray.get_actor(MANAGER, namespace=ns)
        # Submissions arriving together travel to the OrderManager as one call.
        batches = batch_stats()
        self._submissions: Coalescer[NewOrder, tuple[Order, bool]] = Coalescer(
            self.manager.submit_many.remote, window_s=settings.batch_window_s,
            site="submit", stats=batches)
        self.gateways = venue_gateways(settings, batches)
        self.hub = StreamHub(_NotifierSource(ray.get_actor(NOTIFIER, namespace=ns)), self.repo)
        self.metrics = _IngressMetrics()

    async def _repo(self) -> OrderRepository:
        if not self._opened:
            async with self._open_lock:
                if not self._opened:
                    await self.repo.open()
                    self._opened = True
        return self.repo

    async def _submit(self, body: Any) -> tuple[Order, bool]:
        command: NewOrder = parse_order_request(body, self.tokens, self.settings.default_account)
        try:
            order: Order
            created: bool
            order, created = await self._submissions(command)
        except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
            raise TransientDatabaseError(
                f"order manager unavailable, retry: {reason(exc)}"
            ) from None
        except Overloaded:
            self.metrics.rejected.inc(tags={"reason": "overloaded"})
            raise
        return order, created

    # -- REST ------------------------------------------------------------------------------

    @app.post(
        "/api/orders",
        status_code=202,
        summary="Submit a market order",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": OrderRequest.model_json_schema()}}}},
        responses={200: {"description": "The same client_order_id was submitted before"},
                   409: {"description": "client_order_id reused for a different order"},
                   413: {"description": "Body over 64 KiB"},
                   422: {"description": "Invalid order"}},
    )
    async def submit_order(self, request: Request) -> JSONResponse:
        body = _decode(await request.body())
        order, created = await self._submit(body)
        return JSONResponse(order_json(order, self.tokens), status_code=202 if created else 200)

    @app.get("/api/orders/{order_id}", summary="One order with its quotes and event history")
    async def get_order(self, order_id: str) -> dict[str, Any]:
        order = await (await self._repo()).get_order(order_id)
        if order is None:
            raise OrderNotFound(f"order {order_id} not found")
        return order_json(order, self.tokens)

    @app.get("/api/orders", summary="Orders, newest first")
    async def list_orders(
        self,
        status: OrderStatus | None = None,
        limit: int = Query(50, ge=1, le=500),
        cursor: str | None = None,
    ) -> dict[str, Any]:
        orders, next_cursor = await (await self._repo()).list_orders(
            self.settings.default_account, status=status, limit=limit, cursor=cursor
        )
        return {"orders": [order_json(o, self.tokens) for o in orders],
                "next_cursor": next_cursor}

    @app.get("/api/quotes", summary="Every venue's quote and the winner; executes nothing")
    async def quotes(self, input_mint: str, output_mint: str, amount: str) -> dict[str, Any]:
        command = parse_order_request(
            {"type": "market", "input_mint": input_mint, "output_mint": output_mint,
             "amount": amount}, self.tokens, self.settings.default_account)
        quotes, errors = await collect_quotes(
            self.gateways, command.input_mint, command.output_mint, command.amount_in,
            self.settings.quote_timeout_s)
        best = choose_best(quotes)
        return {
            "input_mint": command.input_mint,
            "output_mint": command.output_mint,
            "amount": str(parse_amount(amount)),
            "amount_in_base": str(command.amount_in),
            "quotes": [q.public() for q in quotes],
            "best": best.public() if best else None,
            "errors": {venue: reason(err) for venue, err in errors.items()},
        }

    @app.get("/api/tokens", summary="Tokens the engine can trade")
    async def tokens_list(self) -> dict[str, Any]:
        return {"tokens": [{"symbol": t.symbol, "mint": t.mint, "decimals": t.decimals}
                           for t in self.tokens.tokens]}

    @app.get("/healthz", summary="The ingress process is up")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Ready for orders: database, OrderManager and a worker answer")
    async def readyz(self) -> JSONResponse:
        database = False
        with contextlib.suppress(DexecError):
            database = await (await self._repo()).ping()
        names: list[str] = []
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                names = await self.manager.worker_names.remote()
        async def ping(name: str) -> Any:
            # ray.get_actor blocks on a GCS lookup: keep it off the event loop.
            handle = await asyncio.to_thread(ray.get_actor, name,
                                             namespace=self.settings.namespace)
            return await handle.ping.remote()

        workers = await asyncio.gather(*(_answers(lambda n=n: ping(n)) for n in names))
        checks = {
            "database": database,
            "order_manager": await _answers(lambda: self.manager.stats.remote()),
            "workers": sum(workers),
        }
        ready = bool(checks["database"] and checks["order_manager"] and checks["workers"])
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                            status_code=200 if ready else 503)

    # -- WebSocket -------------------------------------------------------------------------

    @app.websocket("/ws")
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await self._repo()
        outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def enqueue(frame: dict[str, Any]) -> None:
            outbox.put_nowait(frame)

        conn = Connection(enqueue)
        self.hub.connections += 1
        self.metrics.connections.set(self.hub.connections)
        writer = asyncio.get_running_loop().create_task(self._write(websocket, outbox))
        try:
            while True:
                raw = await websocket.receive_text()
                try:
                    await self._handle_frame(conn, raw)
                except DexecError as exc:
                    frame = {"type": "error", "error": exc.message, "status": _error_status(exc)}
                    if frame["status"] in (429, 503):
                        frame["retry_after"] = _retry_after(exc)
                    outbox.put_nowait(frame)
        except WebSocketDisconnect:
            pass
        finally:
            self.hub.connections -= 1
            self.metrics.connections.set(self.hub.connections)
            self.hub.close(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    @staticmethod
    async def _write(websocket: WebSocket, outbox: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            frame = await outbox.get()
            await websocket.send_text(json.dumps(frame))

    async def _handle_frame(self, conn: Connection, raw: str) -> None:
        if len(raw.encode()) > self.settings.max_body_bytes:
            raise InvalidInput(f"frame is larger than {self.settings.max_body_bytes} bytes")
        message = _decode(raw)
        if not isinstance(message, dict):
            raise InvalidInput("a frame must be a JSON object with an `op`")
        op = message.get("op")
        if op == "submit":
            order, _ = await self._submit(message.get("order"))
            await conn.send({"type": "accepted", "order": order_json(order, self.tokens)})
            await self.hub.subscribe(conn, order.order_id, order.seq)
        elif op in ("subscribe", "unsubscribe"):
            order_ids = message.get("order_ids")
            if (not isinstance(order_ids, list) or not order_ids
                    or not all(isinstance(i, str) for i in order_ids)):
                raise InvalidInput("order_ids must be a non-empty list of order id strings")
            if op == "unsubscribe":
                await self.hub.unsubscribe(conn, order_ids)
                await conn.send({"type": "unsubscribed", "order_ids": order_ids})
                return
            since = _since_seq(message.get("since_seq"), order_ids)
            for order_id in order_ids:
                current = await self.repo.get_order(order_id)
                if current is None:
                    await conn.send({"type": "error", "error": f"order {order_id} not found",
                                     "order_id": order_id, "status": 404})
                    continue
                after = since.get(order_id)
                if after is None:
                    await conn.send({"type": "state", "order": order_json(current, self.tokens)})
                    after = current.seq
                await self.hub.subscribe(conn, order_id, after)
        else:
            raise InvalidInput("op must be one of submit, subscribe, unsubscribe")


def build_app(args: dict[str, Any]) -> Application:
    """Build the application for `serve deploy serve_config.yaml` or `serve run`.

    Settings come from DEXEC_* environment variables; `args` overrides them. The actors are
    created (or found) here, before the ingress deployment is returned.
    """
    settings, _embedded = resolve_database(Settings(**args))
    settings = resolve_wallet(settings)
    start_stack(settings)
    return DexecIngress.options(  # type: ignore[attr-defined,no-any-return]
        num_replicas=settings.serve_replicas, max_ongoing_requests=settings.max_ongoing_requests,
        logging_config={"enable_access_log": settings.access_log},
    ).bind(settings)
